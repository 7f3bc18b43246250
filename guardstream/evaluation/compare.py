"""Two models on the same labelled set (`guardstream eval --compare`): each metric's difference
(candidate minus main) with a paired bootstrap confidence interval, and the items where the two
disagree. The offline twin of the canary: a candidate judged against the truth before it sees
live traffic.

Paired: each bootstrap round draws one resample of the items and scores both models on it, so an
interval reflects how the two differ on the same items, not how each varies alone."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import MODES, Prediction, scores

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Difference:
    metric: str  # e.g. "strict F1"
    main: float
    candidate: float
    delta: float  # candidate - main, on every item
    low: float  # the interval of the delta, from the bootstrap rounds
    high: float

    @property
    def significant(self) -> bool:
        """The interval leaves out zero: the models differ on this metric, beyond the sample's luck."""
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Disagreement:
    id: str
    label: str
    main: str  # the main model's tier (or Error), with its categories
    candidate: str


@dataclass(frozen=True)
class Comparison:
    candidate: str  # the candidate model, as given
    rounds: int
    confidence: float
    differences: list[Difference]
    disagreements: list[Disagreement]


Measures = Callable[[list[int]], dict[str, float]]  # every metric of one model on the items at these indices


def measures(items: list[LabelledItem], predictions: list[Prediction]) -> Measures:
    """The compared metrics of one model's predictions, on a resample's indices: each mode's
    precision, recall and F1 (scored once per mode), and the refusal accuracy where responses are
    labelled."""
    judged = {mode: ([i.label in unsafe for i in items], [p.risk in unsafe for p in predictions])
              for mode, unsafe in MODES.items()}
    right = {i: item.refusal == p.refusal for i, (item, p) in enumerate(zip(items, predictions))
             if item.kind == "response" and item.refusal}

    def on(at: list[int]) -> dict[str, float]:
        found = {}
        for mode, (truth, flagged) in judged.items():
            s = scores([truth[i] for i in at], [flagged[i] for i in at])
            found |= {f"{mode} precision": s.precision, f"{mode} recall": s.recall, f"{mode} F1": s.f1}
        if right:  # over the resample's labelled responses
            found["refusal accuracy"] = share([right[i] for i in at if i in right])
        return found

    return on


def share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def tier(p: Prediction) -> str:
    return f"{p.risk} ({', '.join(p.categories)})" if p.categories else p.risk


def compare(items: list[LabelledItem], main: list[Prediction], candidate: list[Prediction], name: str,
            rounds: int = 1000, seed: int = 0) -> Comparison:
    if not len(items) == len(main) == len(candidate):
        raise ValueError(f"{len(items)} items but {len(main)} and {len(candidate)} predictions")
    ours, theirs = measures(items, main), measures(items, candidate)
    everything = list(range(len(items)))
    rng = random.Random(seed)
    deltas: dict[str, list[float]] = {}
    for _ in range(rounds):  # one resample at a time: both models scored on it, then it is dropped
        at = rng.choices(everything, k=len(items))
        a, b = ours(at), theirs(at)
        for metric in a:
            deltas.setdefault(metric, []).append(b[metric] - a[metric])
    tail = (1 - CONFIDENCE) / 2
    differences, whole = [], theirs(everything)
    for metric, a in ours(everything).items():
        b, spread = whole[metric], sorted(deltas.get(metric, [0.0]))
        low, high = spread[int(tail * (len(spread) - 1))], spread[round((1 - tail) * (len(spread) - 1))]
        differences.append(Difference(metric, a, b, b - a, low, high))
    disagreements = [Disagreement(item.id, item.label, tier(a), tier(b))
                     for item, a, b in zip(items, main, candidate) if (a.risk, a.categories) != (b.risk, b.categories)]
    return Comparison(name, rounds, CONFIDENCE, differences, disagreements)

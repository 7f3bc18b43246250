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


Metric = Callable[[list[int]], float]  # a metric of one model on the items at these indices


def metrics(items: list[LabelledItem], predictions: list[Prediction]) -> dict[str, Metric]:
    """Each compared metric of one model's predictions, as a function of a resample's indices."""
    found: dict[str, Metric] = {}
    for mode, unsafe in MODES.items():
        truth = [i.label in unsafe for i in items]
        flagged = [p.risk in unsafe for p in predictions]
        for name in ("precision", "recall", "f1"):
            found[f"{mode} {name.replace('f1', 'F1')}"] = (
                lambda at, truth=truth, flagged=flagged, name=name:
                getattr(scores([truth[i] for i in at], [flagged[i] for i in at]), name))
    right = {i: item.refusal == p.refusal for i, (item, p) in enumerate(zip(items, predictions))
             if item.kind == "response" and item.refusal}
    if right:  # over the resample's labelled responses
        found["refusal accuracy"] = lambda at: share([right[i] for i in at if i in right])
    return found


def share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else 0.0


def tier(p: Prediction) -> str:
    return f"{p.risk} ({', '.join(p.categories)})" if p.categories else p.risk


def compare(items: list[LabelledItem], main: list[Prediction], candidate: list[Prediction], name: str,
            rounds: int = 1000, seed: int = 0) -> Comparison:
    if not len(items) == len(main) == len(candidate):
        raise ValueError(f"{len(items)} items but {len(main)} and {len(candidate)} predictions")
    ours, theirs = metrics(items, main), metrics(items, candidate)
    everything = list(range(len(items)))
    rng = random.Random(seed)
    resamples = [rng.choices(everything, k=len(items)) for _ in range(rounds)]
    tail = (1 - CONFIDENCE) / 2
    differences = []
    for metric, of_main in ours.items():
        of_candidate = theirs[metric]
        deltas = sorted(of_candidate(at) - of_main(at) for at in resamples)
        low, high = (deltas[int(tail * (rounds - 1))], deltas[round((1 - tail) * (rounds - 1))]) if rounds else (0.0, 0.0)
        a, b = of_main(everything), of_candidate(everything)
        differences.append(Difference(metric, a, b, b - a, low, high))
    disagreements = [Disagreement(item.id, item.label, tier(a), tier(b))
                     for item, a, b in zip(items, main, candidate) if (a.risk, a.categories) != (b.risk, b.categories)]
    return Comparison(name, rounds, CONFIDENCE, differences, disagreements)

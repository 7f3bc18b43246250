"""What the model's probabilities say beyond its labels: precision and recall at every threshold
on the unsafe probability, and how well that probability is calibrated (a reliability diagram).

An item's unsafe probability is P(Unsafe) in loose mode and P(Unsafe) + P(Controversial) in
strict mode, as each mode counts Controversial. An item without probabilities (an Error, or a
model run in generate mode) scores 0: it flags nothing at any threshold, as in the report."""

from __future__ import annotations

from dataclasses import dataclass

from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import MODES, Prediction
from guardstream.wire.policy import unsafe_probability as policy_reads

BINS = 10


def unsafe_probability(prediction: Prediction, mode: str) -> float:
    """As the policy's `unsafe_threshold` reads it."""
    return policy_reads(prediction.probabilities or {}, strict=mode == "strict")


@dataclass(frozen=True)
class Point:
    threshold: float  # flagged: unsafe probability at least this
    precision: float
    recall: float


def pr_curve(truth: list[bool], probability: list[float]) -> list[Point]:
    """Precision and recall at each threshold above 0 that changes what is flagged, from the
    highest (one pass over the items sorted by probability: a set may hold many thousands). At 0
    everything would be flagged, even what the model never named: no policy threshold is 0."""
    ranked = sorted(((p, t) for p, t in zip(probability, truth) if p > 0), reverse=True)
    unsafe, hits, points = sum(truth), 0, []  # recall over every unsafe item, scored or not
    for flagged, (p, t) in enumerate(ranked, start=1):
        hits += t
        if flagged == len(ranked) or ranked[flagged][0] != p:  # the last item at this threshold
            points.append(Point(p, hits / flagged, hits / unsafe if unsafe else 0.0))
    return points


def curves(items: list[LabelledItem], predictions: list[Prediction], mode: str) -> dict[str, list[Point]]:
    """The overall curve ("all") and one per category the labels or predictions name: for a
    category, an item counts as flagged for it only where the model named it."""
    unsafe = MODES[mode]
    truth = [i.label in unsafe for i in items]
    probability = [unsafe_probability(p, mode) for p in predictions]
    found = {"all": pr_curve(truth, probability)}
    named = sorted({c for i in items for c in i.categories} | {c for p in predictions for c in p.categories})
    for c in named:
        found[c] = pr_curve([t and c in i.categories for t, i in zip(truth, items)],
                            [q if c in p.categories else 0.0 for q, p in zip(probability, predictions)])
    return found


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    items: int
    mean_probability: float  # what the model said, on average, in this bin
    unsafe_share: float  # what the labels say: the share of its items labelled unsafe


@dataclass(frozen=True)
class Reliability:
    bins: list[Bin]  # the non-empty ones
    expected_calibration_error: float  # items-weighted mean gap between the two


def reliability(items: list[LabelledItem], predictions: list[Prediction], mode: str, bins: int = BINS) -> Reliability:
    unsafe = MODES[mode]
    pairs = [(unsafe_probability(p, mode), i.label in unsafe) for i, p in zip(items, predictions)]
    found = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(q, t) for q, t in pairs if low <= q < high or (b == bins - 1 and q == 1.0)]
        if inside:
            found.append(Bin(low, high, len(inside), sum(q for q, _ in inside) / len(inside),
                             sum(t for _, t in inside) / len(inside)))
    gap = sum(b.items * abs(b.mean_probability - b.unsafe_share) for b in found) / max(1, len(pairs))
    return Reliability(found, gap)

"""`guardstream eval --calibrate`: the policy's `unsafe_threshold` that meets a target precision
(or recall) on a calibration split, and what it then gives on held-out items, which is the number
to believe: a threshold fitted on some items always looks better on those same items.

Of the thresholds that meet the target on the calibration split, the one with the best other
measure is picked (the highest recall for a precision target, and the other way round), the
higher threshold on a tie. A language with enough calibration items of its own (`ENOUGH`: safe
and unsafe alike) gets its own threshold too, for the policy's `languages` entries."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

from guardstream.evaluation.curves import Point, pr_curve, unsafe_probability
from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import MODES, Prediction, Scores, overall, scores

TARGETS = ("precision", "recall")
ENOUGH = 20  # calibration items a language needs, safe and unsafe each, for a threshold of its own


@dataclass(frozen=True)
class Calibration:
    mode: str  # strict or loose: how the labels and the unsafe probability count Controversial
    target: str  # precision or recall
    goal: float
    threshold: float | None  # None: no threshold meets the goal on the calibration split
    calibration_items: int
    heldout_items: int
    on_calibration: Scores | None  # at the threshold
    on_heldout: Scores | None  # at the threshold: what to expect
    heldout_by_labels: Scores  # the model's labels, no threshold, on the same held-out items
    languages: dict[str, Calibration] = field(default_factory=dict)  # those with enough items: their own

    def fragment(self) -> dict:
        """A tenant's policy with the threshold, for `guardstream policy set`: in observe mode for a
        strict calibration (observe judges as strict, and records what it would have done), loose
        as it is, with each language's own threshold that met the target. Merge it into the tenant's
        policy (`guardstream policy show TENANT`)."""
        own = {language: {"unsafe_threshold": c.threshold} for language, c in self.languages.items()
               if c.threshold is not None}
        return {"mode": "observe" if self.mode == "strict" else "loose", "unsafe_threshold": self.threshold,
                **({"languages": own} if own else {})}


def halves(items: list[LabelledItem]) -> tuple[list[LabelledItem], list[LabelledItem]]:
    """A set without splits, cut in two by a hash of each item's id (the same cut on every run):
    the calibration half and the held-out half."""
    calibration = [i for i in items if zlib.crc32(i.id.encode()) % 2 == 0]
    return calibration, [i for i in items if zlib.crc32(i.id.encode()) % 2 == 1]


def pick(points: list[Point], target: str, goal: float) -> Point | None:
    meeting = [p for p in points if getattr(p, target) >= goal]
    other = "recall" if target == "precision" else "precision"
    return max(meeting, key=lambda p: (getattr(p, other), p.threshold), default=None)


def at_threshold(items: list[LabelledItem], predictions: list[Prediction], mode: str, threshold: float) -> Scores:
    return scores([i.label in MODES[mode] for i in items],
                  [unsafe_probability(p, mode) >= threshold for p in predictions])


Labelled = tuple[list[LabelledItem], list[Prediction]]


def calibrate(calibration: Labelled, heldout: Labelled, mode: str, target: str, goal: float,
              languages: tuple[list[str | None], list[str | None]] | None = None) -> Calibration:
    """The threshold for all items, and for each language with enough calibration items (given
    `languages`: each calibration and held-out item's) one of its own."""
    if target not in TARGETS:
        raise ValueError(f"the target is precision or recall, not {target!r}")
    found = fitted(calibration, heldout, mode, target, goal)
    if languages is None:
        return found
    own = {}
    for language in sorted({x for x in languages[0] if x}):
        mine = [of_language(pair, told, language) for pair, told in zip((calibration, heldout), languages)]
        unsafe = sum(i.label in MODES[mode] for i in mine[0][0])
        if min(unsafe, len(mine[0][0]) - unsafe) >= ENOUGH:
            own[language] = fitted(mine[0], mine[1], mode, target, goal)
    return replace(found, languages=own)


def of_language(labelled: Labelled, told: list[str | None], language: str) -> Labelled:
    at = [n for n, x in enumerate(told) if x == language]
    return [labelled[0][n] for n in at], [labelled[1][n] for n in at]


def fitted(calibration: Labelled, heldout: Labelled, mode: str, target: str, goal: float) -> Calibration:
    (c_items, c_predictions), (h_items, h_predictions) = calibration, heldout
    picked = pick(pr_curve([i.label in MODES[mode] for i in c_items],
                           [unsafe_probability(p, mode) for p in c_predictions]), target, goal)
    by_labels = overall(h_items, h_predictions)[mode]
    if picked is None:
        return Calibration(mode, target, goal, None, len(c_items), len(h_items), None, None, by_labels)
    t = picked.threshold
    return Calibration(mode, target, goal, t, len(c_items), len(h_items), at_threshold(c_items, c_predictions, mode, t),
                       at_threshold(h_items, h_predictions, mode, t), by_labels)

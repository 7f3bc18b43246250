"""Calibration: the threshold picked meets its target on the calibration split, and is reported on
the held-out items as it is, against an independent count."""

import random

from guardstream.evaluation.calibration import Calibration, calibrate, halves, pick
from guardstream.evaluation.curves import Point
from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import Prediction
from guardstream.wire.policy import TenantPolicy


def labelled(n: int, seed: int) -> tuple[list[LabelledItem], list[Prediction]]:
    """Items whose unsafe probability rises with being unsafe, with overlap: thresholds trade
    precision for recall."""
    rng = random.Random(seed)
    items, predictions = [], []
    for k in range(n):
        unsafe = rng.random() < 0.4
        p = min(1.0, max(0.01, rng.gauss(0.7 if unsafe else 0.3, 0.2)))
        items.append(LabelledItem(id=f"s{seed}-{k}", kind="prompt", messages=[{"role": "user", "content": "x"}],
                                  label="Unsafe" if unsafe else "Safe"))
        predictions.append(Prediction("Unsafe" if p >= 0.5 else "Safe",
                                      probabilities={"Unsafe": p, "Controversial": 0.0, "Safe": 1 - p}))
    return items, predictions


def counted(items, predictions, threshold):
    """Precision and recall at a threshold, counted here."""
    flagged = [p.probabilities["Unsafe"] >= threshold for p in predictions]
    truth = [i.label == "Unsafe" for i in items]
    hits = sum(f and t for f, t in zip(flagged, truth))
    return hits / sum(flagged), hits / sum(truth)


def test_a_precision_target_is_met_on_the_calibration_split_with_the_most_recall():
    calibration, heldout = labelled(400, 1), labelled(400, 2)
    c = calibrate(calibration, heldout, "loose", "precision", 0.9)
    precision, recall = counted(*calibration, c.threshold)
    assert precision >= 0.9 and (c.on_calibration.precision, c.on_calibration.recall) == (precision, recall)
    lower = max(p.probabilities["Unsafe"] for p in calibration[1] if p.probabilities["Unsafe"] < c.threshold)
    assert counted(*calibration, lower)[0] < 0.9 or counted(*calibration, lower)[1] == recall  # none better below


def test_the_heldout_numbers_are_what_the_threshold_gives_there_not_the_calibration_splits():
    calibration, heldout = labelled(400, 1), labelled(400, 2)
    c = calibrate(calibration, heldout, "loose", "recall", 0.95)
    assert c.on_calibration.recall >= 0.95
    assert (c.on_heldout.precision, c.on_heldout.recall) == counted(*heldout, c.threshold)
    by_labels = counted(*heldout, 0.5)  # the labels here are the probability at 0.5
    assert (c.heldout_by_labels.precision, c.heldout_by_labels.recall) == by_labels
    assert (c.calibration_items, c.heldout_items) == (400, 400)


def test_an_unreachable_target_picks_nothing_and_says_so():
    calibration, heldout = labelled(200, 3), labelled(200, 4)
    c = calibrate(calibration, heldout, "loose", "precision", 1.01)
    assert c.threshold is None and c.on_heldout is None and c.heldout_by_labels.support > 0


def test_ties_go_to_the_higher_threshold():
    points = [Point(0.9, 1.0, 0.5), Point(0.8, 1.0, 0.5), Point(0.5, 0.8, 1.0)]
    assert pick(points, "precision", 0.95).threshold == 0.9
    assert pick(points, "recall", 0.9).threshold == 0.5


def test_the_fragment_is_a_policy_that_policy_set_accepts():
    strict = Calibration("strict", "precision", 0.9, 0.62, 10, 10, None, None, None)
    loose = Calibration("loose", "precision", 0.9, 0.7, 10, 10, None, None, None)
    assert TenantPolicy.model_validate(strict.fragment()) == TenantPolicy(mode="observe", unsafe_threshold=0.62)
    assert TenantPolicy.model_validate(loose.fragment()).mode == "loose"


def test_halves_cut_a_set_the_same_way_every_time():
    items, _ = labelled(100, 5)
    first, second = halves(items)
    assert halves(items) == (first, second) and 30 < len(first) < 70
    assert sorted(i.id for i in first + second) == sorted(i.id for i in items)  # each in one half


def test_a_language_with_enough_items_gets_its_own_threshold_and_a_small_one_does_not():
    """English sure of itself, Spanish less so (its unsafe items' probabilities lower): each meets
    the target with its own threshold; the few German items keep the overall one."""
    en, es, de = labelled(300, 6), labelled(300, 7), labelled(30, 8)
    es = (es[0], [Prediction(p.risk, probabilities={"Unsafe": p.probabilities["Unsafe"] * 0.8, "Controversial": 0.0,
                                                    "Safe": 1 - p.probabilities["Unsafe"] * 0.8}) for p in es[1]])
    calibration = (en[0][:150] + es[0][:150] + de[0], en[1][:150] + es[1][:150] + de[1])
    heldout = (en[0][150:] + es[0][150:], en[1][150:] + es[1][150:])
    told = (["en"] * 150 + ["es"] * 150 + ["de"] * 30, ["en"] * 150 + ["es"] * 150)
    c = calibrate(calibration, heldout, "loose", "precision", 0.9, told)
    assert sorted(c.languages) == ["en", "es"]  # German: too few to calibrate on
    for language, at in (("en", slice(0, 150)), ("es", slice(150, 300))):
        own = c.languages[language]
        assert own.on_calibration.precision >= 0.9
        assert (own.on_heldout.precision, own.on_heldout.recall) == counted(heldout[0][at], heldout[1][at], own.threshold)
    assert c.languages["es"].threshold < c.languages["en"].threshold  # Spanish's scale is lower
    fragment = c.fragment()
    assert fragment["languages"] == {x: {"unsafe_threshold": c.languages[x].threshold} for x in ("en", "es")}
    assert TenantPolicy.model_validate(fragment).for_language("es").unsafe_threshold == c.languages["es"].threshold

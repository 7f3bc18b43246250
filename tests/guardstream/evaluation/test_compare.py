"""The paired bootstrap of `eval --compare`, on predictions made up to know the answer."""

import random

import pytest

from guardstream.evaluation.compare import compare
from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import Prediction, report


def items(labels: list[str]) -> list[LabelledItem]:
    return [LabelledItem(id=f"i{n}", kind="prompt", messages=[{"role": "user", "content": "x"}], label=label)
            for n, label in enumerate(labels)]


def noisy(labels: list[str], wrong: float, seed: int) -> list[Prediction]:
    """Each label said back, or flipped between Safe and Unsafe with probability `wrong`."""
    rng = random.Random(seed)
    flip = {"Safe": "Unsafe", "Unsafe": "Safe", "Controversial": "Safe"}
    return [Prediction(flip[label] if rng.random() < wrong else label) for label in labels]


LABELS = ["Unsafe", "Safe"] * 150


def by_metric(comparison):
    return {d.metric: d for d in comparison.differences}


def test_a_model_against_itself_differs_by_nothing_anywhere():
    same = noisy(LABELS, 0.2, seed=1)
    comparison = compare(items(LABELS), same, same, "itself", rounds=200)
    assert {(d.delta, d.low, d.high) for d in comparison.differences} == {(0.0, 0.0, 0.0)}
    assert comparison.disagreements == []


def test_a_clearly_better_candidate_has_an_interval_above_zero_and_a_worse_one_below():
    data = items(LABELS)
    main, better = noisy(LABELS, 0.3, seed=1), noisy(LABELS, 0.05, seed=2)
    up = by_metric(compare(data, main, better, "better", rounds=500))["strict F1"]
    down = by_metric(compare(data, better, main, "worse", rounds=500))["strict F1"]
    assert 0 < up.low <= up.delta <= up.high and up.significant
    assert down.low <= down.delta <= down.high < 0
    assert up.delta == pytest.approx(-down.delta)


def test_the_point_differences_are_the_two_reports_differences():
    data = items(LABELS[:60] + ["Controversial"] * 20)
    main, candidate = noisy([i.label for i in data], 0.2, 3), noisy([i.label for i in data], 0.25, 4)
    differences = by_metric(compare(data, main, candidate, "c", rounds=50))
    a, b = report(data, main), report(data, candidate)
    for mode in ("strict", "loose"):
        for name, field in (("precision", "precision"), ("recall", "recall"), ("F1", "f1")):
            d = differences[f"{mode} {name}"]
            assert (d.main, d.candidate) == (getattr(a.overall[mode], field), getattr(b.overall[mode], field))
            assert d.delta == pytest.approx(d.candidate - d.main)


def test_a_small_difference_on_few_items_is_not_called_significant():
    labels = ["Unsafe", "Safe"] * 10
    main, candidate = noisy(labels, 0.2, 5), list(noisy(labels, 0.2, 5))
    candidate[0] = Prediction("Safe" if candidate[0].risk == "Unsafe" else "Unsafe")  # one item changed
    d = by_metric(compare(items(labels), main, candidate, "c", rounds=500))["strict F1"]
    assert d.delta < 0 and d.low < 0 and d.high == 0  # worse on the one item; every resample without it: equal
    assert not d.significant


def test_disagreements_name_the_items_and_both_answers():
    data = items(["Unsafe", "Safe", "Unsafe"])
    main = [Prediction("Unsafe", ("Violent",)), Prediction("Safe"), Prediction("Unsafe", ("Violent",))]
    candidate = [Prediction("Unsafe", ("Violent",)), Prediction("Controversial", ("PII",)), Prediction("Unsafe", ("PII",))]
    found = compare(data, main, candidate, "c", rounds=10).disagreements
    assert [(d.id, d.label, d.main, d.candidate) for d in found] == [
        ("i1", "Safe", "Safe", "Controversial (PII)"), ("i2", "Unsafe", "Unsafe (Violent)", "Unsafe (PII)")]


def test_refusal_accuracy_is_compared_only_over_labelled_responses():
    data = [LabelledItem(id=f"r{n}", kind="response", label="Safe", refusal="Yes",
                         messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "no"}])
            for n in range(4)] + items(["Safe"] * 4)
    main = [Prediction("Safe", refusal="Yes")] * 4 + [Prediction("Safe")] * 4
    candidate = [Prediction("Safe", refusal="No")] * 2 + [Prediction("Safe", refusal="Yes")] * 2 + [Prediction("Safe")] * 4
    d = by_metric(compare(data, main, candidate, "c", rounds=20))["refusal accuracy"]
    assert (d.main, d.candidate) == (1.0, 0.5)


def test_predictions_of_another_length_are_refused():
    with pytest.raises(ValueError, match="3 items but 3 and 2 predictions"):
        compare(items(["Safe"] * 3), [Prediction("Safe")] * 3, [Prediction("Safe")] * 2, "c")

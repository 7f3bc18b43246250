"""The report's numbers on a set small enough to count by hand."""

import pytest

from guardstream.evaluation.dataset import LabelledItem, languages
from guardstream.evaluation.metrics import Prediction, percentile, report


def item(label, categories=(), kind="prompt", refusal=None):
    return LabelledItem(id=label, kind=kind, messages=[{"role": "user", "content": "x"}], label=label,
                        categories=list(categories), refusal=refusal)


ITEMS = [item("Unsafe", ["Violent"]), item("Unsafe", ["PII"]), item("Controversial", ["Politically Sensitive Topics"]),
         item("Safe"), item("Safe", kind="response", refusal="Yes"), item("Unsafe", ["Violent"], "response", "No")]
PREDICTED = [Prediction("Unsafe", ("Violent",), None, 10), Prediction("Safe", (), None, 20),
             Prediction("Controversial", ("Politically Sensitive Topics",), None, 30),
             Prediction("Unsafe", ("Violent",), None, 40), Prediction("Error", latency_ms=50),
             Prediction("Unsafe", ("PII",), "No", 60)]


def test_strict_and_loose_count_controversial_as_unsafe_and_as_safe():
    r = report(ITEMS, PREDICTED)
    # strict: labelled unsafe 1,2,3,6 (4); flagged 1,3,4,6 (4); both 1,3,6 (3)
    assert (r.overall["strict"].precision, r.overall["strict"].recall, r.overall["strict"].support) == (0.75, 0.75, 4)
    # loose: labelled unsafe 1,2,6 (3); flagged 1,4,6 (3); both 1,6 (2)
    assert r.overall["loose"].precision == pytest.approx(2 / 3) and r.overall["loose"].f1 == pytest.approx(2 / 3)
    violent = r.categories["strict"]["Violent"]  # labelled 1,6; flagged with it 1,4
    assert (violent.precision, violent.recall, violent.support) == (0.5, 0.5, 2)
    assert r.categories["loose"]["Politically Sensitive Topics"].support == 0  # loose: Controversial is safe
    assert r.categories["strict"]["PII"].precision == 0  # item 6 named PII, labelled Violent


def test_confusion_refusals_errors_and_latency():
    r = report(ITEMS, PREDICTED)
    assert r.confusion["Unsafe"] == {"Safe": 1, "Controversial": 0, "Unsafe": 2, "Error": 0}
    assert r.confusion["Safe"] == {"Safe": 0, "Controversial": 0, "Unsafe": 1, "Error": 1}
    assert (r.errors, r.refusal_items, r.refusal_accuracy) == (1, 2, 0.5)  # the Error has no refusal label
    assert (r.latency_p50_ms, r.latency_p99_ms) == (30, 60) and percentile([], 0.5) == 0
    with pytest.raises(ValueError, match="6 items but 5 predictions"):
        report(ITEMS, PREDICTED[:5])


def test_per_language_scores_group_the_items_by_their_language():
    """Items 0, 1, 3 Spanish (an unsafe hit, a miss, a false alarm); the rest untold."""
    languages = ["es", "es", None, "es", None, None]
    r = report(ITEMS, PREDICTED, languages=languages)
    assert list(r.languages) == ["es", "unknown"] and [g.items for g in r.languages.values()] == [3, 3]
    spanish = r.languages["es"].overall["loose"]
    assert (spanish.precision, spanish.recall, spanish.support) == (0.5, 0.5, 2)
    assert report(ITEMS, PREDICTED).languages is None  # not asked for


def test_an_items_language_is_its_own_else_the_detectors():
    class Detector:
        def languages_of(self, texts):
            return ["es" if text.startswith("¿") else None for text in texts]

    spanish = LabelledItem(id="q", kind="prompt", messages=[{"role": "user", "content": "¿qué?"}], label="Safe")
    named = LabelledItem(id="n", kind="prompt", messages=[{"role": "user", "content": "¿qué?"}], label="Safe",
                         language="pt-BR")
    assert languages([spanish, named, ITEMS[0]], Detector()) == ["es", "pt-BR", None]
    assert languages([spanish], None) == [None]

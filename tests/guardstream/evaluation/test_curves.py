"""The precision-recall curves and the reliability diagram of `eval --plot` (and of calibration),
against the report's own scores and hand-computed bins."""

import random
import sys

from click.testing import CliRunner

from guardstream.cli import main
from guardstream.evaluation.curves import curves, pr_curve, reliability, unsafe_probability
from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import Prediction, scores
from guardstream.evaluation.plots import plot


def items(labels, categories=None):
    return [LabelledItem(id=f"i{n}", kind="prompt", messages=[{"role": "user", "content": "x"}], label=label,
                         categories=(categories or {}).get(n, []))
            for n, label in enumerate(labels)]


def scored(unsafe: float, controversial: float = 0.0, categories=()) -> Prediction:
    risk = "Unsafe" if unsafe >= 0.5 else "Controversial" if controversial >= 0.5 else "Safe"
    return Prediction(risk, tuple(categories), probabilities={"Safe": 1 - unsafe - controversial,
                                                              "Controversial": controversial, "Unsafe": unsafe})


def test_every_point_is_the_reports_scores_at_its_threshold():
    rng = random.Random(3)
    truth = [rng.random() < 0.4 for _ in range(300)]
    probability = [round(rng.random(), 2) for _ in truth]  # ties: one point per distinct threshold
    points = pr_curve(truth, probability)
    assert [p.threshold for p in points] == sorted(set(probability) - {0.0}, reverse=True)
    for p in points:
        s = scores(truth, [q >= p.threshold for q in probability])
        assert (p.precision, p.recall) == (s.precision, s.recall)


def test_strict_adds_controversial_and_loose_does_not():
    p = scored(0.3, 0.4)
    assert (unsafe_probability(p, "strict"), unsafe_probability(p, "loose")) == (0.7, 0.3)
    assert unsafe_probability(Prediction("Error"), "strict") == 0.0  # no probabilities: flags nothing


def test_a_category_curve_counts_only_items_the_model_named_it_for():
    data = items(["Unsafe", "Unsafe", "Safe"], {0: ["Violent"], 1: ["PII"]})
    predictions = [scored(0.9, categories=["Violent"]), scored(0.8, categories=["Violent"]), scored(0.1)]
    violent = curves(data, predictions, "loose")["Violent"]
    assert [(p.threshold, p.precision, p.recall) for p in violent] == [(0.9, 1.0, 1.0), (0.8, 0.5, 1.0)]
    assert curves(data, predictions, "loose")["PII"] == []  # labelled PII, never named so: no threshold finds it


def test_reliability_bins_and_the_expected_calibration_error():
    data = items(["Unsafe", "Safe", "Unsafe", "Unsafe", "Safe"])
    predictions = [scored(0.95), scored(0.91), scored(0.15), scored(0.12), scored(0.0)]
    r = reliability(data, predictions, "loose")
    assert [(b.low, b.items) for b in r.bins] == [(0.0, 1), (0.1, 2), (0.9, 2)]
    assert r.bins[1].unsafe_share == 1.0 and abs(r.bins[1].mean_probability - 0.135) < 1e-9
    gaps = [0.0, 2 * (1 - 0.135), 2 * abs(0.93 - 0.5)]
    assert abs(r.expected_calibration_error - sum(gaps) / 5) < 1e-9


def test_plot_writes_the_three_pngs(tmp_path):
    data = items(["Unsafe", "Safe", "Controversial"], {0: ["Violent"]})
    written = plot(data, [scored(0.9, categories=["Violent"]), scored(0.2), scored(0.1, 0.7)], tmp_path / "p", "t")
    assert sorted(p.name for p in written) == ["pr-loose.png", "pr-strict.png", "reliability.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in written)


def test_without_matplotlib_plot_is_refused_before_any_judging(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails, as where it is not installed
    dataset = tmp_path / "set.jsonl"
    dataset.write_text('{"prompt": "hello", "S": 0}\n')
    out = CliRunner().invoke(main, ["eval", str(dataset), "--plot", str(tmp_path / "p"), "--gen-model", "/nowhere"])
    assert out.exit_code == 2 and "pip install 'guardstream[plots]'" in out.output

"""`guardstream eval` on the fixture corpus's held-out split, through the engines, with a candidate
compared and a threshold calibrated: its numbers, the candidate's and the threshold's on the
half it was not fitted on equal an independent computation from direct engine calls."""

import json
import zlib

import pytest
from click.testing import CliRunner

from guardstream.cli import main
from guardstream.dev.tiny_checkpoints import FIXTURES, load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.wire.policy import TenantPolicy
from guardstream.workers.engines.messages import GenRequest

from tests.helpers.models import perturbed_copy


def f1(truth, flagged):
    hits = sum(t and f for t, f in zip(truth, flagged))
    precision, recall = hits / max(1, sum(flagged)), hits / max(1, sum(truth))
    return 2 * precision * recall / (precision + recall) if hits else 0.0


def judged(model, corpus):
    return GenEngine(str(model)).classify([GenRequest(x.messages, Moderate(x.kind)) for x in corpus])


@pytest.fixture(scope="module")
def direct(tiny):
    """The fixture model asked directly about each held-out item."""
    corpus = load_corpus("heldout")
    return corpus, judged(tiny.gen, corpus)


def test_eval_through_the_engines_equals_direct_engine_calls(tiny, direct, tmp_path):
    corpus, results = direct
    candidate = perturbed_copy(tiny.gen, tmp_path / "candidate", scale=0.7)  # judges a few items differently
    theirs = judged(candidate, corpus)
    said = [r.judgement.risk_level.value if r.judgement else "Error" for r in results]
    they_said = [r.judgement.risk_level.value if r.judgement else "Error" for r in theirs]
    strict = f1([x.label != "Safe" for x in corpus], [s in ("Unsafe", "Controversial") for s in said])
    loose = f1([x.label == "Unsafe" for x in corpus], [s == "Unsafe" for s in said])
    violent = f1([x.label == "Unsafe" and "Violent" in x.categories for x in corpus],
                 [s == "Unsafe" and "Violent" in r.judgement.categories for s, r in zip(said, results)])

    out = CliRunner().invoke(main, ["eval", str(FIXTURES / "corpus.jsonl"), "--split", "heldout",
                                    "--gen-model", str(tiny.gen), "--json", "--batch-size", "16",
                                    "--compare", str(candidate), "--rounds", "200", "--plot", str(tmp_path / "plots")])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["items"] == len(corpus) == 88
    assert abs(report["overall"]["strict"]["f1"] - strict) < 1e-9 and abs(report["overall"]["loose"]["f1"] - loose) < 1e-9
    assert abs(report["categories"]["loose"]["Violent"]["f1"] - violent) < 1e-9
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 88
    assert report["overall"]["strict"]["f1"] > 0.9  # the fixture model learned its corpus; the numbers are not noise
    # Chinese, Arabic and Spanish items name their language; the English ones are told by the detector
    told = {language: group["items"] for language, group in report["languages"].items()}
    assert {told["zh"], told["ar"], told["es"]} == {6} and told["en"] >= 60 and sum(told.values()) == 88, told
    for language in ("zh", "ar", "es"):
        mine = [(x, s) for x, s in zip(corpus, said) if x.language == language]
        theirs_f1 = f1([x.label != "Safe" for x, _ in mine], [s in ("Unsafe", "Controversial") for _, s in mine])
        assert abs(report["languages"][language]["overall"]["strict"]["f1"] - theirs_f1) < 1e-9, language

    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["pr-loose.png", "pr-strict.png", "reliability.png"]
    compared = report["comparison"]
    differences = {d["metric"]: d for d in compared["differences"]}
    their_strict = f1([x.label != "Safe" for x in corpus], [s in ("Unsafe", "Controversial") for s in they_said])
    assert differences["strict F1"]["main"] == report["overall"]["strict"]["f1"]
    assert abs(differences["strict F1"]["candidate"] - their_strict) < 1e-9
    apart = {x.id for x, a, b in zip(corpus, results, theirs)
             if (a.judgement and (a.judgement.risk_level, a.judgement.categories)) !=
             (b.judgement and (b.judgement.risk_level, b.judgement.categories))}
    assert {d["id"] for d in compared["disagreements"]} == apart and 0 < len(apart) < 20
    for d in compared["differences"]:
        assert d["low"] <= d["delta"] <= d["high"]


def test_calibration_meets_its_target_where_it_was_fitted_and_reports_the_other_half_as_it_is(tiny, direct, tmp_path):
    corpus, results = direct
    fragment = tmp_path / "threshold.json"
    out = CliRunner().invoke(main, ["eval", str(FIXTURES / "corpus.jsonl"), "--split", "heldout", "--gen-model", str(tiny.gen),
                                    "--json", "--batch-size", "16", "--calibrate", "--target-precision", "0.99",
                                    "--write", str(fragment)])
    assert out.exit_code == 0, out.output
    calibration = json.loads(out.stdout)["calibration"]
    threshold = calibration["threshold"]
    assert calibration["on_calibration"]["precision"] >= 0.99
    # the held-out half, by the id hash, counted here from the direct calls' probabilities
    other_half = [(x, r) for x, r in zip(corpus, results) if zlib.crc32(x.id.encode()) % 2 == 1]
    truth = [x.label != "Safe" for x, _ in other_half]
    flagged = [r.probabilities["Unsafe"] + r.probabilities["Controversial"] >= threshold for _, r in other_half]
    hits = sum(t and f for t, f in zip(truth, flagged))
    assert calibration["heldout_items"] == len(other_half) == json.loads(out.stdout)["items"]
    assert (calibration["on_heldout"]["precision"], calibration["on_heldout"]["recall"]) == \
        (hits / sum(flagged), hits / sum(truth))
    assert TenantPolicy.model_validate_json(fragment.read_text()) == TenantPolicy(mode="observe", unsafe_threshold=threshold)

    unreachable = CliRunner().invoke(main, ["eval", str(FIXTURES / "corpus.jsonl"), "--split", "heldout", "--gen-model",
                                            str(tiny.gen), "--calibrate", "--target-recall", "1", "--target-precision", "1"])
    assert unreachable.exit_code == 2 and "needs one target" in unreachable.output

"""`guardstream eval` on the fixture corpus's held-out split, through the engines, with a candidate
compared: its numbers, and the candidate's, equal an independent computation from direct engine
calls."""

import json

from click.testing import CliRunner

from guardstream.cli import main
from guardstream.dev.tiny_checkpoints import FIXTURES, load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest

from tests.helpers.models import perturbed_copy


def f1(truth, flagged):
    hits = sum(t and f for t, f in zip(truth, flagged))
    precision, recall = hits / max(1, sum(flagged)), hits / max(1, sum(truth))
    return 2 * precision * recall / (precision + recall) if hits else 0.0


def judged(model, corpus):
    return GenEngine(str(model)).classify([GenRequest(x.messages, Moderate(x.kind)) for x in corpus])


def test_eval_through_the_engines_equals_direct_engine_calls(tiny, tmp_path):
    corpus = load_corpus("heldout")
    candidate = perturbed_copy(tiny.gen, tmp_path / "candidate")  # judges a few items differently
    results, theirs = judged(tiny.gen, corpus), judged(candidate, corpus)
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
    assert report["items"] == len(corpus) == 70
    assert abs(report["overall"]["strict"]["f1"] - strict) < 1e-9 and abs(report["overall"]["loose"]["f1"] - loose) < 1e-9
    assert abs(report["categories"]["loose"]["Violent"]["f1"] - violent) < 1e-9
    assert sum(sum(row.values()) for row in report["confusion"].values()) == 70
    assert report["overall"]["strict"]["f1"] > 0.9  # the fixture model learned its corpus; the numbers are not noise

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

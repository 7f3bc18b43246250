"""`guardstream eval --through pipeline` on the fixture corpus's held-out split, through a running
worker over Kafka: the same numbers as on the engines, the marked replies' timeliness included
(streamed as a gateway streams them, the stops read from the worker's final stream verdicts), and
per language: the Chinese, Arabic and Spanish items' own, the English ones' as the worker detects."""

import json

import pytest
from click.testing import CliRunner

from guardstream.cli import main
from guardstream.dev.tiny_checkpoints import FIXTURES

pytestmark = pytest.mark.integration


def test_through_the_pipeline_the_numbers_are_the_engines(worker, tiny, monkeypatch):
    monkeypatch.setenv("GUARDSTREAM_TOPIC_PREFIX", worker.settings.kafka.topic_prefix)
    asked = ["eval", str(FIXTURES / "corpus.jsonl"), "--split", "heldout", "--json"]
    on_engines = CliRunner().invoke(main, [*asked, "--gen-model", str(tiny.gen)])
    through = CliRunner().invoke(main, [*asked, "--through", "pipeline", "--bootstrap", worker.bootstrap])
    assert on_engines.exit_code == 0 and through.exit_code == 0, on_engines.output + through.output
    engines, pipeline = json.loads(on_engines.stdout), json.loads(through.stdout)
    # an answer out of the grammar (the fixture model gives one on some CPUs) is an error on either path alike
    assert pipeline["items"] == 88 and pipeline["errors"] == engines["errors"]
    assert pipeline["timeliness"]["streams"] == 17 and pipeline["timeliness"]["buckets"]["no verdict"] == 0
    for judged in ("overall", "categories", "confusion", "refusal_accuracy", "refusal_items", "timeliness", "languages"):
        assert pipeline[judged] == engines[judged], judged

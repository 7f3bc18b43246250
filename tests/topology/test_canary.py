"""A canary model beside the main one, on a real worker: two different tiny checkpoints (the main
fixtures, and ones trained for a few steps only), half of the conversations sampled.

What it must hold: the sample is the conversations the keyed hash names, sent as soon as the worker
is ready (before the canary's models load: it starts from the worker's start); every action is what the main
model and the policy give, as without a canary (the canary's verdicts never reach the verdict
topic); each pair says what the two models say when asked directly; the report's agreement is
what those direct answers give."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from click.testing import CliRunner

from guardstream.cli import main as cli
from guardstream.dev.broker import free_port
from guardstream.dev.stream_reference import StreamGuardReference
from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints, load_corpus
from guardstream.schemas import CanaryRecord, Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest
from guardstream.workers.moderation.canary import CanaryReport, sampled
from guardstream.wire.policy import TenantPolicy

from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.metrics import scrape
from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import start_worker
from tests.helpers.stream_helpers import build_streams, interleaved_chunks, reference_stop
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

SHARE, EVENTS, STREAMS, SECRET = 0.5, 60, 10, "canary-test-secret"


def direct_judgements(model: str, requests: list[GenRequest]) -> list:
    return [r.judgement for r in GenEngine(model, device="cpu", dtype="auto", max_batch_size=16).classify(requests)]


def test_a_canary_judges_its_sample_off_the_enforcement_path(broker, tiny, tmp_path):
    variant = build_tiny_checkpoints(gen_steps=60, stream_steps=6)  # different models: under-trained
    port = free_port()
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "worker.log", app_id="gs-canary",
                          topic_prefix="cn.", metrics_port=port, agents="gen,stream,enforcement,canary",
                          table_store="memory",
                          canary_sample_secret=SECRET,
                          canary=json.dumps({"gen_model": str(variant.gen), "stream_model": str(variant.stream),
                                             "sample": SHARE}))
    try:
        settings = worker.settings
        # sent at once, before the canary's models have loaded and its group has joined: it starts
        # from the worker's start, so it still samples every one of them
        examples = load_corpus()[:EVENTS]
        events = [{"event_id": f"cn-e{i}", "conversation_id": f"cn-conv-{i}", "tenant": "acme", "moderate": ex.kind,
                   "messages": ex.messages} for i, ex in enumerate(examples)]
        tok = cached_tokenizer(tiny.stream)
        streams = [dict(s, id=f"cn-{s['id']}") for s in build_streams(tok)[:STREAMS]]
        produce(settings, broker.bootstrap, events)
        produce(settings, broker.bootstrap, interleaved_chunks(streams), role="chunks")

        chosen_events = [e for e in events if sampled(e["conversation_id"].encode(), SHARE, SECRET.encode())]
        chosen_streams = [s for s in streams if sampled(f"conv-{s['id']}".encode(), SHARE, SECRET.encode())]
        assert chosen_events and chosen_streams and len(chosen_events) < len(events)
        found = eventually(lambda: (r := [CanaryRecord.model_validate(v) for v in read_all(settings, broker.bootstrap,
                                                                                          "canary", idle_timeout_s=1)])
                           and len(r) >= len(chosen_events) + len(chosen_streams) and r, 180, "every sampled pair")
        gen = {r.source_event_id: r for r in found if r.variant == "gen"}
        paired_streams = {r.stream_id: r for r in found if r.variant == "stream"}
        assert sorted(gen) == sorted(e["event_id"] for e in chosen_events)  # the sample, and only it
        assert sorted(paired_streams) == sorted(s["id"] for s in chosen_streams)

        # Each pair says what the two models answer when asked directly, and so does the report.
        requests = [GenRequest(e["messages"], Moderate(e["moderate"])) for e in events]
        main, canary = direct_judgements(str(tiny.gen), requests), direct_judgements(str(variant.gen), requests)
        risk = lambda j: j.risk_level.value if j else "Error"  # noqa: E731 - the under-trained model may answer out of format
        expected = Counter()
        for event, m, c in zip(events, main, canary):
            if event in chosen_events:
                record = gen[event["event_id"]]
                assert (record.main.risk_level.value, record.canary.risk_level.value) == (risk(m), risk(c))
                assert record.main.categories == m.categories and record.policy_version == "default@0"
                expected[(risk(m), risk(c))] += 1
        report = CanaryReport(found)
        print("\n".join(report.lines()))
        assert report.confusion["gen"] == expected
        assert report.agreement("gen") == sum(n for (a, b), n in expected.items() if a == b) / len(chosen_events)
        assert 0 < report.agreement("gen") < 1  # two different models: some agree, some do not
        for name, model in (("main", tiny.stream), ("canary", variant.stream)):
            reference = StreamGuardReference.from_pretrained(model)
            assert {s["id"]: getattr(paired_streams[s["id"]], name).stop_token for s in chosen_streams} == \
                {s["id"]: reference_stop(reference, tok, s) for s in chosen_streams}, name
        assert report.stops["same"] < report.pairs("stream")  # the two stop some streams at different tokens

        # Enforcement is what the main model and the policy give, for every event, sampled or not.
        actions = eventually(lambda: (a := read_all(settings, broker.bootstrap, "actions", idle_timeout_s=1,
                                                    keep=lambda v: v["source_event_id"].startswith("cn-e")))
                             and len(a) >= len(events) and a, 60, "an action for every event")
        assert Counter(a["source_event_id"] for a in actions) == Counter(e["event_id"] for e in events)
        strict = TenantPolicy()
        assert {a["source_event_id"]: a["action"] for a in actions} == \
            {e["event_id"]: strict.decide(m.risk_level, m.categories).action.value for e, m in zip(events, main)}
        models = {v["model_id"] for v in read_all(settings, broker.bootstrap, "verdicts", idle_timeout_s=1)}
        assert models == {str(tiny.gen), str(tiny.stream)}  # no verdict of the canary's

        # `canary report` reads the same from the topic
        printed = CliRunner().invoke(cli, ["canary", "report", "--json", "--bootstrap", broker.bootstrap],
                                     env={"GUARDSTREAM_TOPIC_PREFIX": "cn."})
        assert printed.exit_code == 0 and json.loads(printed.stdout) == json.loads(json.dumps(report.summary()))

        pairs = scrape(port, "guardstream_canary_pairs_total")
        assert sum(pairs.values()) == len(found)
        assert sum(v for k, v in pairs.items() if ("variant", "gen") in k) == len(chosen_events)
    finally:
        worker.stop()

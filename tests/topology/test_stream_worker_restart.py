"""A worker SIGKILLed mid-stream: its successor (on the same volume, as a restarted container)
recovers the stream sessions from the table on disk and the changelog's tail, replays what was
not committed, and every chunk still gets its (one) verdict."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter


import pytest

from guardstream.dev.broker import free_port
from guardstream.dev.stream_reference import StreamGuardReference
from guardstream.kafka_io import set_policy

from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import start_worker, wait_drained
from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.metrics import table_metric
from tests.helpers.stream_helpers import build_streams, interleaved_chunks, reference_stop

pytestmark = pytest.mark.integration


def test_a_killed_worker_loses_no_stream_verdict(broker, tiny, tmp_path):
    tok = cached_tokenizer(tiny.stream)
    streams = build_streams(tok)[:12]
    expected = {s["id"]: reference_stop(StreamGuardReference.from_pretrained(tiny.stream), tok, s) for s in streams}
    events = interleaved_chunks(streams)
    settings = dict(app_id="gs-restart", topic_prefix="rs.", data_dir=str(tmp_path / "data"))
    first = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "first.log", **settings)
    produce(first.settings, broker.bootstrap, events[: len(events) // 2], role="chunks")
    asyncio.run(wait_drained(first.settings, broker.bootstrap, "chunks", timeout_s=120))
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)
    second_half = events[len(events) // 2 :]
    produce(first.settings, broker.bootstrap, second_half, role="chunks")
    # the default policy again, as its first version on the policies topic: the successor starts with it
    asyncio.run(set_policy(first.settings, broker.bootstrap, "default", {"mode": "strict"}, "test"))
    port = free_port()
    second = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "second.log", metrics_port=port, **settings)
    try:
        asyncio.run(wait_drained(second.settings, broker.bootstrap, "chunks", timeout_s=180))
        replayed = table_metric(port, "guardstream_changelog_replayed_total", "stream-state")
        verdicts = {v["verdict_id"]: v for v in read_all(second.settings, broker.bootstrap, "verdicts",
                                                         lambda v: v.get("stream") is not None)}
    finally:
        second.stop()
    chunk_verdicts = [v for v in verdicts.values() if not v["stream"]["final"] and v["moderate"] == "response"]
    assert Counter(v["source_event_id"] for v in chunk_verdicts) == Counter(e["event_id"] for e in events)
    assert not [v for v in verdicts.values() if v["error"]]
    assert {v["policy_version"] for v in chunk_verdicts if v["source_event_id"] in {e["event_id"] for e in second_half}} \
        == {"default@1"}
    # the first worker's state was on disk: at most the seals since its last write were replayed (Tansu only)
    assert (replayed or 0) <= 2 * second.settings.kafka.topic_partitions, replayed  # none at all on Kafka
    stops = Counter(v["stream"]["stream_id"] for v in chunk_verdicts if v["action"] == "stop")
    finals = {v["stream"]["stream_id"]: v for v in verdicts.values() if v["stream"]["final"]}
    for s in streams:
        assert stops[s["id"]] == (expected[s["id"]] is not None) and finals[s["id"]]["stream"]["stop_token"] == expected[s["id"]]

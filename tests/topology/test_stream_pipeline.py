"""50 concurrent streams as interleaved chunks → a verdict for every chunk, one stop per unsafe stream
at the token the reference model predicts, none for safe ones, and no loss when the actor is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter


import pytest

from guardstream.dev.stream_reference import StreamGuardReference

from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import wait_drained
from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.stream_helpers import build_streams, interleaved_chunks, reference_stop

pytestmark = pytest.mark.integration


def test_concurrent_streams_stop_once_where_the_reference_says(worker, tiny):
    tok = cached_tokenizer(tiny.stream)
    model = StreamGuardReference.from_pretrained(tiny.stream)
    streams = build_streams(tok)
    expected = {s["id"]: reference_stop(model, tok, s) for s in streams}
    assert sum(v is not None for v in expected.values()) >= 20 and sum(v is None for v in expected.values()) >= 20
    events = interleaved_chunks(streams)
    half = len(events) // 2
    produce(worker.settings, worker.bootstrap, events[:half], role="chunks")
    time.sleep(1.0)
    os.kill(worker.actor_pids("StreamGuard")[-1], signal.SIGKILL)  # the actor holding every session dies mid-run
    produce(worker.settings, worker.bootstrap, events[half:], role="chunks")
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "chunks", timeout_s=240))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts", timeout_s=120))

    ours = lambda v: (v.get("stream") or {}).get("stream_id", "").startswith("st-")  # noqa: E731
    verdicts = read_all(worker.settings, worker.bootstrap, "verdicts", ours)
    chunk_verdicts = [v for v in verdicts if not v["stream"]["final"] and v["moderate"] == "response"]
    assert Counter(v["source_event_id"] for v in chunk_verdicts) == Counter(e["event_id"] for e in events)
    assert not [v for v in verdicts if v["error"]]
    finals = {v["stream"]["stream_id"]: v for v in verdicts if v["stream"]["final"]}
    assert set(finals) == {s["id"] for s in streams}
    stops = Counter(v["stream"]["stream_id"] for v in chunk_verdicts if v["action"] == "stop")
    for s in streams:
        want = expected[s["id"]]
        assert stops[s["id"]] == (1 if want is not None else 0), s["id"]
        assert finals[s["id"]]["stream"]["stop_token"] == want, s["id"]
    actions = read_all(worker.settings, worker.bootstrap, "actions",
                       lambda a: a["action"] == "stop" and a["conversation_id"].startswith("conv-st-"))
    assert Counter(a["conversation_id"] for a in actions) == Counter(f"conv-{sid}" for sid in stops)

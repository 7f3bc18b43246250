"""A gap that outlives its worker: chunks 0 and 2 arrive, the worker commits them (chunk 2 held
behind the gap) and is SIGKILLed. Its successor finds the held chunk in the table, releases it
and reports the gap once the gap timeout has passed since it took over; then, idle past its TTL, the stream
leaves the table."""

from __future__ import annotations

import asyncio
import signal
import time


import pytest

from guardstream.dev.broker import free_port

from tests.helpers.models import cached_tokenizer
from tests.helpers.pipeline import start_worker, wait_drained
from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.metrics import table_metric
from tests.helpers.stream_helpers import build_streams, interleaved_chunks

pytestmark = pytest.mark.integration

GAP_TIMEOUT_S = 20  # the first worker is killed well within it; the second waits it afresh after taking over


def stream_entries(port: int) -> float | None:
    return table_metric(port, "guardstream_table_entries", "stream-state")


def test_a_held_chunk_is_released_by_the_next_worker(broker, tiny, tmp_path):
    tok = cached_tokenizer(tiny.stream)
    stream = {**build_streams(tok)[1], "id": "gap-st"}
    chunks = interleaved_chunks([stream])
    assert len(chunks) >= 4
    # tables in memory, the explicit choice: the successor restores them from the changelog alone
    env = dict(app_id="gs-gap", topic_prefix="gap.", agents="stream", stream_gap_timeout_s=GAP_TIMEOUT_S,
               table_store="memory")
    first = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "first.log", **env)
    produce(first.settings, broker.bootstrap, [chunks[0], chunks[2]], role="chunks")
    asyncio.run(wait_drained(first.settings, broker.bootstrap, "chunks"))
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(30)
    assert not [v for v in read_all(first.settings, broker.bootstrap, "verdicts")
                if v["source_event_id"] == chunks[2]["event_id"]], "chunk 2 was judged before its gap timed out"

    port = free_port()
    second = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "second.log", metrics_port=port,
                          **{**env, "stream_idle_ttl_s": 5})
    started = time.monotonic()
    try:
        def released() -> bool:
            return any(v["source_event_id"] == chunks[2]["event_id"]
                       for v in read_all(second.settings, broker.bootstrap, "verdicts", idle_timeout_s=1))

        while not released() and time.monotonic() - started < GAP_TIMEOUT_S + 30:
            time.sleep(1)
        letters = read_all(second.settings, broker.bootstrap, "dlq", lambda d: d["error_code"] == "sequence_gap")
        deadline = time.monotonic() + 40
        while stream_entries(port) != 0 and time.monotonic() < deadline:
            time.sleep(1)
        assert stream_entries(port) == 0, "the idle stream stayed in the table"
    finally:
        second.stop()
    assert released(), "the held chunk was never released after the restart"
    assert len(letters) == 1 and "chunks 1..1 never arrived" in letters[0]["error"]

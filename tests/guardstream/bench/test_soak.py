"""Two minutes of many short reply streams against a real worker (`guardstream soak`'s engine):
the stream table empties once streams finish and idle out, memory stays flat, nothing crashes."""

from __future__ import annotations

import asyncio

import pytest

from guardstream.bench.soak import Sample, run_soak
from guardstream.dev.broker import free_port

from tests.helpers.pipeline import start_worker, wait_drained
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

MINUTES, STREAMS, IDLE_TTL_S = 2, 8, 5
RSS_GROWTH_MB = 64  # the stated bound, after the first minute's warm-up


def test_a_soak_of_short_streams_leaves_nothing_behind(broker, tiny, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "worker.log", app_id="gs-soak",
                          topic_prefix="soak.", agents="stream", stream_idle_ttl_s=IDLE_TTL_S, metrics_port=port)
    try:
        eventually(lambda: Sample.scrape(url, 0, 0, 0).actor_rss_mb > 0, 30, "a first health report: actor memory")
        samples = asyncio.run(run_soak(worker.settings, broker.bootstrap, url, STREAMS, MINUTES, every_s=10,
                                       report=lambda s: print(s)))
        asyncio.run(wait_drained(worker.settings, broker.bootstrap, "chunks", timeout_s=120))
        after = eventually(lambda: (s := Sample.scrape(url, 0, 0, 0)).table_entries == 0 and s, 60,
                           "finished streams to leave the table")
        alive, log = worker.process.poll() is None, worker.log()
    finally:
        worker.stop()

    assert alive and "Traceback" not in log
    assert len(samples) >= 10 and samples[-1].streams_finished >= STREAMS * 100
    # per live stream its state and one entry per chunk; per finished one its state, for IDLE_TTL_S
    # plus the forgetting timer's interval (as long again) plus that timer's lateness under load (up
    # to one more interval: 2 TTL was exceeded by one entry in CI), at the rate streams finished
    # around that sample. A leak would instead grow with every stream finished (1,000s here).
    rates = [(b.streams_finished - a.streams_finished) / (b.at_s - a.at_s) for a, b in zip(samples, samples[1:])]
    for i, s in enumerate(samples):  # the intervals that end and start at sample i
        finished_per_s = max(rates[max(0, i - 1) : i + 1])
        assert s.table_entries <= STREAMS * (1 + 24 // 4) + finished_per_s * 3 * IDLE_TTL_S, (s, finished_per_s)
    assert after.table_entries == 0, "finished streams stayed in the table"
    warm = next(s for s in samples if s.at_s >= 60)
    assert samples[-1].worker_rss_mb - warm.worker_rss_mb < RSS_GROWTH_MB, (warm, samples[-1])
    assert samples[-1].actor_rss_mb - warm.actor_rss_mb < RSS_GROWTH_MB, (warm, samples[-1])
    assert samples[-1].changelog_mb > 0 and samples[-1].kv_used_mb >= 0
    print(f"soak: {samples[-1].streams_finished} streams in {MINUTES} min; worker RSS {samples[0].worker_rss_mb:.0f} -> "
          f"{samples[-1].worker_rss_mb:.0f} MB, actor RSS {samples[0].actor_rss_mb:.0f} -> {samples[-1].actor_rss_mb:.0f} MB; "
          f"stream table at the end {after.table_entries}; changelog {samples[-1].changelog_mb:.1f} MB")

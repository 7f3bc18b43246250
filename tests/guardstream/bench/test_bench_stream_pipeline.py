"""`guardstream bench stream-pipeline` measures through the real pipeline (its numbers are never
asserted): every chunk's latency is taken, the streams that turn unsafe are stopped where the
reference stops them, and their stop lag is counted from the chunk holding the stop token."""

from __future__ import annotations

import asyncio

import pytest

from guardstream.bench.stream_pipeline import (UNSAFE_EVERY, bench_replies, measure_broker_floor, measure_streams,
                                               process_cpu)
from guardstream.client import Guard
from guardstream.dev.stream_reference import StreamGuardReference

from tests.helpers.models import cached_tokenizer
from tests.helpers.stream_helpers import reference_stop
from tests.guardstream.test_client_pipeline import client_settings

pytestmark = pytest.mark.integration


def test_bench_replies_turn_unsafe_where_the_corpus_says(tiny):
    tok = cached_tokenizer(tiny.stream)
    replies = bench_replies(tok, 8, 40)
    assert [r.unsafe_at is not None for r in replies] == [i % UNSAFE_EVERY == 0 for i in range(8)]
    assert all(len(r.ids) >= 40 for r in replies)
    assert all(r.unsafe_at <= 40 for r in replies if r.unsafe_at is not None)


def test_streams_are_measured_chunk_by_chunk_with_their_stop_lag(worker, tiny):
    tok = cached_tokenizer(tiny.stream)
    model = StreamGuardReference.from_pretrained(tiny.stream)
    replies = bench_replies(tok, 5, 24)
    expected = [reference_stop(model, tok, {"prompt": r.prompt, "ids": r.ids}) for r in replies]
    assert any(e is not None for e in expected)

    async def run():
        async with Guard(worker.bootstrap, client_settings(), timeout_s=120) as guard:
            return await measure_streams(guard, replies, chunk=4, tokens_per_s=60,
                                         worker_cpu=process_cpu(worker.process.pid))

    run = asyncio.run(run())
    stopped = [e for e in expected if e is not None]
    # every chunk up to the one holding the stop token (all of them, in a stream never stopped) was pushed and judged
    at_least = sum(e // 4 + 1 if e is not None else -(-len(r.ids) // 4) for r, e in zip(replies, expected))
    assert run.streams == 5 and run.unsafe_streams == 2 and len(run.latencies_ms) >= at_least
    assert all(latency > 0 for latency in run.latencies_ms) and run.worker_cpu_s > 0
    assert len(run.stop_lag_ms) == len(run.stop_lag_tokens) == len(stopped)
    assert all(lag > 0 for lag in run.stop_lag_ms) and all(tokens >= 0 for tokens in run.stop_lag_tokens)


def test_the_broker_floor_is_measured_without_a_worker(broker):
    floor = asyncio.run(measure_broker_floor(client_settings(), broker.bootstrap, count=20, per_s=200))
    assert len(floor) == 20 and all(ms > 0 for ms in floor)

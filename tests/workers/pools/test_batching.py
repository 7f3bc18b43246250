import asyncio

import pytest

from guardstream.workers.pools.batching import MicroBatcher


async def test_concurrent_callers_share_batches_and_get_their_own_answers():
    seen = []

    def run(items):
        seen.append(list(items))
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, max_batch=4, max_wait_s=0.05)
    answers = await asyncio.gather(batcher.submit([1, 2]), batcher.submit([3]), batcher.submit([4, 5, 6]))
    assert answers == [[10, 20], [30], [40, 50, 60]]
    assert [len(b) for b in seen] == [4, 2]  # capped at max_batch, the rest in the next batch


async def test_a_lone_request_waits_at_most_max_wait():
    batcher = MicroBatcher(lambda items: items, max_batch=64, max_wait_s=0.02)
    started = asyncio.get_running_loop().time()
    assert await batcher.submit(["x"]) == ["x"]
    assert asyncio.get_running_loop().time() - started < 1.0 and batcher.batches_run == 1


async def test_an_engine_error_reaches_every_caller_and_the_batcher_survives():
    calls = []

    def run(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("engine fell over")
        return items

    batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.01)
    with pytest.raises(RuntimeError, match="engine fell over"):
        await asyncio.gather(batcher.submit([1]), batcher.submit([2]))
    assert await batcher.submit([3]) == [3]

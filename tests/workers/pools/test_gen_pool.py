"""GenPool's admission: at most `max_inflight` calls per actor; more callers wait instead of queueing
work on the actor (backpressure to the Faust agent). The actors are fakes here; the integration
tests run the real ones."""

import asyncio

import pytest

from guardstream.schemas import Moderate
from guardstream.workers.engines.messages import GenRequest
from guardstream.workers.pools.gen_pool import GenPool
from guardstream.workers.pools.unavailable import GenUnavailable


class SlowActor:
    """Stands in for a GenGuard handle: `classify.remote(...)` is awaitable, and counts concurrency."""

    def __init__(self):
        self.running = self.most = self.calls = 0
        self.classify = self

    def remote(self, requests):
        async def run():
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
            await asyncio.sleep(0.02)
            self.running -= 1
            return [f"answer:{r.messages[0]['content']}" for r in requests]
        return run()


def pool_of(actors, max_inflight, timeout_s=10.0) -> GenPool:
    return GenPool(actors, "fake", call_timeout_s=timeout_s, max_inflight=max_inflight)  # no Ray: fake handles


def request(text: str) -> GenRequest:
    return GenRequest([{"role": "user", "content": text}], Moderate.prompt)


async def test_callers_beyond_the_inflight_limit_wait_and_every_answer_returns_in_order():
    actors = [SlowActor(), SlowActor()]
    pool = pool_of(actors, max_inflight=2)
    batches = [[request(f"{b}-{i}") for i in range(4)] for b in range(10)]
    answers = await asyncio.gather(*(pool.classify(batch) for batch in batches))
    assert answers == [[f"answer:{r.messages[0]['content']}" for r in batch] for batch in batches]
    assert [a.most for a in actors] == [2, 2]  # ten concurrent callers, never more than 2 calls per actor
    assert sum(a.calls for a in actors) == 20  # each batch split over both actors


async def test_a_pool_that_does_not_answer_in_time_is_unavailable():
    class Stuck(SlowActor):
        def remote(self, requests):
            return asyncio.sleep(5)

    with pytest.raises(GenUnavailable, match="TimeoutError"):
        await pool_of([Stuck()], max_inflight=1, timeout_s=0.05).classify([request("x")])


def test_a_poison_input_fails_alone_and_its_batch_mates_are_judged():
    from guardstream.workers.engines.messages import GenResult
    from guardstream.workers.pools.gen_pool import isolate_failures

    calls = []

    def engine(requests):
        calls.append(len(requests))
        if any(r.messages[0]["content"] == "poison" for r in requests):
            raise RuntimeError("CUDA error: device-side assert")
        return [GenResult(None, f"ok:{r.messages[0]['content']}", None, 1.0) for r in requests]

    results = isolate_failures(engine)([request("a"), request("poison"), request("b")])
    assert [r.raw_output for r in results] == ["ok:a", "", "ok:b"]
    assert results[1].error.startswith("engine failed on this input: RuntimeError: CUDA error")
    assert calls == [3, 1, 1, 1]  # the batch, then one at a time
    assert isolate_failures(engine)([request("poison")])[0].error is not None

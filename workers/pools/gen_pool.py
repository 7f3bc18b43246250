"""Ray actors hosting Qwen3Guard-Gen, and the pool the Faust agent calls.

Each actor batches dynamically: calls from any number of callers (agents of several workers)
are gathered into engine batches (`MicroBatcher`). The pool admits at most `max_inflight` calls
per actor; a caller beyond that waits, which holds its Faust agent back from fetching more: a
saturated pool slows intake instead of growing a queue.

Actors restart when their process dies (`max_restarts=-1`) and a call in flight is retried on
the restarted actor (`max_task_retries`), so a crash costs latency, not verdicts. A call that
still fails raises `GenUnavailable`, which the agent turns into `Error` verdicts for the policy's
fail mode.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import ray

from guardstream.workers import faults
from guardstream.workers.pools import actors
from guardstream.workers.engines.messages import GenRequest, GenResult
from guardstream.workers.engines.narrowing import one_at_a_time
from guardstream.workers.pools.batching import MicroBatcher
from guardstream.workers.pools.specs import GenSpec
from guardstream.workers.pools.unavailable import GenUnavailable


def isolate_failures(classify: Callable[[list[GenRequest]], list[GenResult]]) -> Callable[[list[GenRequest]], list[GenResult]]:
    """A batch the engine fails on is retried one request at a time, so a poison input gets an
    error result of its own instead of taking its batch-mates down with it."""

    def failed(_request: GenRequest, exc: Exception) -> GenResult:
        return GenResult(None, "", f"engine failed on this input: {type(exc).__name__}: {str(exc)[:300]}", 0.0)

    return lambda requests: one_at_a_time(requests, classify, failed, "the Gen engine")


@ray.remote(max_restarts=-1, max_task_retries=2)
class GenGuard:
    def __init__(self, spec: GenSpec, threads: int):
        import torch  # the engines (torch, transformers) are imported in the actor's process only

        from guardstream.workers.engines.gen_engine import GenEngine, NoopGenEngine

        torch.set_num_threads(threads)
        if spec.backend == "vllm":
            from guardstream.workers.engines.gen_vllm import VllmGenEngine

            self.engine = VllmGenEngine(spec.model, device=spec.device, dtype=spec.dtype, max_batch_size=spec.batch_size)
        elif spec.backend == "noop":
            self.engine = NoopGenEngine()
        else:
            self.engine = GenEngine(spec.model, device=spec.device, dtype=spec.dtype, max_batch_size=spec.batch_size,
                                    mode=spec.mode, kv_cache_mb=spec.kv_cache_mb)
        self.batcher = MicroBatcher(isolate_failures(self.engine.classify), spec.batch_size, spec.actor_wait_ms / 1000)

    async def ready(self) -> dict:
        return actors.identity(self.engine.model_id)

    async def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        return await self.batcher.submit(requests)


class GenPool:
    """A worker's view of the GenGuard actors (`model_pool` finds or creates them)."""

    kind = "gen"  # the label of its actors in metrics

    def __init__(self, handles: list, model: str, *, actor_batch_size: int = 16, call_timeout_s: float = 120,
                 max_inflight: int = 4):
        self.actors, self.model = handles, model
        # what one agent batch should hold: a full batch for every actor, as the pool was made (its manifest)
        self.records_per_batch = actor_batch_size * len(handles)
        self.call_timeout_s = call_timeout_s
        self.max_inflight = max_inflight
        self._admission: list[asyncio.Semaphore] | None = None  # made in the loop that uses them
        self._next = itertools.cycle(range(len(handles)))

    async def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        """Spread one micro-batch over the actors and gather the results in input order."""
        faults.hit("pool")
        if not requests:
            return []
        if self._admission is None:
            self._admission = [asyncio.Semaphore(self.max_inflight) for _ in self.actors]
        k = len(self.actors)
        shards = [requests[i::k] for i in range(min(k, len(requests)))]

        sent = []

        async def call(shard: list[GenRequest]) -> list[GenResult]:
            index = next(self._next)
            async with self._admission[index]:  # backpressure: wait while this actor is saturated
                sent.append(self.actors[index].classify.remote(shard))
                return await sent[-1]

        answers = await actors.gather((call(shard) for shard in shards), self.call_timeout_s, GenUnavailable, sent)
        results: list[GenResult | None] = [None] * len(requests)
        for i, answer in enumerate(answers):
            for j, result in enumerate(answer):
                results[i + j * k] = result
        return results

"""Ray actors hosting the Stream engine, and the pool that routes each session to one of them.

A session always goes to the same actor (a stable hash of its id), so its KV cache stays there.
An actor that restarted has lost its sessions: its engine answers `missing` for them, and the
caller sends them again with the prompt and the reply tokens judged so far, which rebuilds the
cache. Sessions themselves (lengths, rollback, isolation) are the engine's; this is routing and Ray.
"""

from __future__ import annotations

import logging
import os
import zlib
from typing import TYPE_CHECKING

import ray

from guardstream.workers import faults
from guardstream.workers.engines.checkpoint_files import checkpoint_config
from guardstream.workers.engines.messages import StreamAnswer, StreamCall
from guardstream.workers.pools import actors
from guardstream.workers.pools.specs import StreamSpec
from guardstream.workers.pools.unavailable import StreamUnavailable

if TYPE_CHECKING:
    from guardstream.workers.engines.stream_engine import StreamEngine


log = logging.getLogger(__name__)


def run_or_exit(engine: StreamEngine, calls: list[StreamCall]) -> list[StreamAnswer]:
    """The engine's answers; on a CUDA error, which only a new process clears, the process exits
    and Ray restarts the actor (its sessions are rebuilt by their callers)."""
    from guardstream.workers.engines.stream_engine import DeviceLost

    try:
        return engine.run(calls)
    except DeviceLost as exc:
        log.critical("CUDA error in the stream engine (%s); exiting so that Ray restarts the actor", exc)
        os._exit(70)


@ray.remote(max_restarts=-1, max_task_retries=2)
class StreamGuard:
    def __init__(self, spec: StreamSpec, threads: int):
        import torch  # the engine (torch) is imported in the actor's process only

        from guardstream.workers.engines.stream_engine import StreamEngine

        torch.set_num_threads(threads)
        self.model = spec.model
        self.engine = StreamEngine.from_pretrained(spec.model, device=spec.device, dtype=getattr(torch, spec.dtype),
                                                   max_sessions=spec.max_sessions, idle_ttl_s=spec.idle_ttl_s,
                                                   kv_cache_bytes=spec.kv_cache_mb << 20)

    def ready(self) -> dict:
        """Who it is and what it holds: process memory, and KV cache bytes and evictions."""
        memory = self.engine.memory()
        return {**actors.identity(self.model), "kv_used_bytes": memory["used_bytes"], "kv_reserved_bytes": memory["reserved_bytes"],
                "kv_budget_bytes": memory["budget_bytes"], "kv_evictions": self.engine.evicted}

    def step(self, calls: list[StreamCall]) -> list[StreamAnswer]:
        return run_or_exit(self.engine, calls)


class StreamPool:
    """A worker's view of the StreamGuard actors (`model_pool` finds or creates them)."""

    kind = "stream"  # the label of its actors in metrics

    def __init__(self, handles: list, model: str, *, call_timeout_s: float = 120):
        self.actors, self.model, self.call_timeout_s = handles, model, call_timeout_s
        self.max_positions = checkpoint_config(model)["max_position_embeddings"]  # what a session may hold

    def owner(self, session: str) -> int:
        """The same actor in every worker (the same hash over the same named actors), so a rebalance
        that moves a conversation to another worker leaves its session and KV cache where they are."""
        return zlib.crc32(session.encode()) % len(self.actors)

    async def step(self, calls: list[StreamCall]) -> list[StreamAnswer]:
        faults.hit("pool")
        by_actor: dict[int, list[StreamCall]] = {}
        for call in calls:
            by_actor.setdefault(self.owner(call.session), []).append(call)
        answers = await actors.gather((self.actors[i].step.remote(group) for i, group in by_actor.items()),
                                      self.call_timeout_s, StreamUnavailable)
        found = {a.session: a for group in answers for a in group}
        return [found[c.session] for c in calls]

"""Ray actors hosting the Stream engine, and the pool that routes each session to one of them.

A session always goes to the same actor (a stable hash of its id), so its KV cache stays there.
An actor that restarted has lost its sessions: it answers `missing` for them, and the caller
sends them again with the prompt and the reply tokens judged so far, which rebuilds the cache.
The same happens when a session holds another number of reply tokens than the caller expects.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field

import ray

from guardstream.workers import faults
from guardstream.workers.pools import actors
from guardstream.workers.engines.stream_engine import Feed, Open, StreamAnswer, StreamEngine


log = logging.getLogger(__name__)


class StreamUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class StreamSpec(actors.ActorSpec):
    dtype: str = "float32"  # a torch dtype name, unlike Gen's "auto"
    max_sessions: int = 4096
    idle_ttl_s: float = 600
    kv_cache_mb: int = 4096


@dataclass(frozen=True)
class StreamCall:
    session: str
    new_ids: list[int]
    prompt_ids: list[int] | None = None  # set to (re)open the session
    history_ids: list[int] = field(default_factory=list)  # reply tokens already judged, when rebuilding
    close: bool = False
    judged: int = 0  # reply tokens the caller's state says the session holds (for a call that does not open it)


def run_calls(engine: StreamEngine, calls: list[StreamCall]) -> list[StreamAnswer]:
    """One batched step for every call. A batch the engine fails on is rolled back and run again
    one session at a time, so only a failing session gets an error; that session is closed, and
    its next call finds it missing and rebuilds it from its history."""
    before = {c.session: engine.sessions[c.session].length for c in calls if c.session in engine.sessions}
    try:
        return _run_batch(engine, calls)
    except Exception as exc:  # noqa: BLE001 - isolated below
        _roll_back(engine, calls, before)
        if len(calls) == 1:
            return [_failed(engine, calls[0], exc)]
        log.warning("stream step failed on a batch of %d sessions (%s); running them one at a time", len(calls), exc)
        return [answer for call in calls for answer in run_calls(engine, [call])]


def _roll_back(engine: StreamEngine, calls: list[StreamCall], before: dict[str, int]) -> None:
    """Fed sessions return to their lengths before the failed step (KV past a length is never
    read); sessions the step opened or re-opened (a new slot) are closed: the retry opens them."""
    for call in calls:
        if call.prompt_ids is None and call.session in before and call.session in engine.sessions:
            engine.sessions[call.session].length = before[call.session]
        else:
            engine.close(call.session)


def _failed(engine: StreamEngine, call: StreamCall, exc: Exception) -> StreamAnswer:
    if "CUDA error" in str(exc):  # sticky on the device: only a new process clears it, and Ray restarts this one
        log.critical("CUDA error in the stream engine (%s); exiting so that Ray restarts the actor", exc)
        os._exit(70)
    engine.close(call.session)
    return StreamAnswer(call.session, error=f"engine failed on this stream: {type(exc).__name__}: {str(exc)[:300]}")


def _in_step(engine: StreamEngine, call: StreamCall) -> bool:
    session = engine.sessions.get(call.session)
    return session is not None and session.length - session.prompt_length == call.judged


def _run_batch(engine: StreamEngine, calls: list[StreamCall]) -> list[StreamAnswer]:
    """Opens first (one batched step), then every session's new tokens (a second batched step). A
    session that is gone, or that holds another number of reply tokens than the caller's state says
    (a retried step it already fed, a step whose tokens it never got), is answered missing: the
    caller rebuilds it from its history instead of feeding it out of step."""
    missing = {c.session for c in calls if c.prompt_ids is None and not _in_step(engine, c)}
    live = [c for c in calls if c.session not in missing]
    opened = {r.session: r.query for r in engine.step([Open(c.session, c.prompt_ids) for c in live if c.prompt_ids])}
    feeds = [c for c in live if c.history_ids or c.new_ids]
    fed = {r.session: r.tokens for r in engine.step([Feed(c.session, c.history_ids + c.new_ids) for c in feeds])} if feeds else {}
    answers = []
    for c in calls:
        if c.session in missing:
            answers.append(StreamAnswer(c.session, missing=True))
            continue
        tokens = fed.get(c.session, [])
        answers.append(StreamAnswer(c.session, query=opened.get(c.session), tokens=tokens[len(c.history_ids):]))
        if c.close:
            engine.close(c.session)
    engine.evict_idle()
    return answers


@ray.remote(max_restarts=-1, max_task_retries=2)
class StreamGuard:
    def __init__(self, spec: StreamSpec, threads: int):
        import torch

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
        return run_calls(self.engine, calls)


class StreamPool:
    """A worker's view of the StreamGuard actors (`model_pool` finds or creates them)."""

    kind = "stream"  # the label of its actors in metrics

    def __init__(self, handles: list, model: str, *, call_timeout_s: float = 120):
        from transformers import AutoConfig

        self.actors, self.model, self.call_timeout_s = handles, model, call_timeout_s
        self.max_positions = AutoConfig.from_pretrained(model).max_position_embeddings  # what a session may hold

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

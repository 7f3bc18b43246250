"""What every model pool does with its Ray actors: start them, wait for their models, and have
them say who they are. Actors restart when their process dies (`max_restarts=-1`) and a call in
flight is retried on the restarted actor (`max_task_retries`), so a crash costs latency, not verdicts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable

import psutil
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError


def start(actor_class, count: int, num_cpus: float, num_gpus: float, *args) -> list:
    """`count` actors of `actor_class`, each reserving `num_cpus`/`num_gpus`; the engine runs as many
    torch threads as whole CPUs it reserved (its first argument after `args`)."""
    threads = max(1, int(num_cpus)) if num_cpus else 1
    return [actor_class.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(*args, threads) for _ in range(count)]


def wait_ready(actors: list, kind: str, model: str, timeout_s: float) -> list[dict]:
    """Block until every actor has loaded its model; a load error surfaces here, not later."""
    try:
        return ray.get([a.ready.remote() for a in actors], timeout=timeout_s)
    except RayActorError as exc:
        raise RuntimeError(f"a {kind} actor failed to load {model!r}: {exc}") from None
    except GetTimeoutError:
        raise RuntimeError(f"{kind} actors did not load {model!r} within {timeout_s:.0f}s") from None


def identity(model: str) -> dict:
    """What an actor's `ready()` reports: its model, process and resident memory."""
    return {"model": model, "pid": os.getpid(), "rss": psutil.Process().memory_info().rss}


async def gather(calls: Iterable[Awaitable], timeout_s: float, unavailable: type[Exception]) -> list:
    """Every call's answer, in order; `unavailable` when an actor stayed dead or the pool did not
    answer within the timeout (the caller applies its fail mode)."""
    try:
        return await asyncio.wait_for(asyncio.gather(*calls), timeout_s)
    except (RayActorError, RayTaskError, asyncio.TimeoutError) as exc:
        raise unavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

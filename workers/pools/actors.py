"""What every model pool does with its Ray actors: create them by name (or find them), wait for
their models, and have them say who they are. Actors restart when their process dies
(`max_restarts=-1`) and a call in flight is retried on the restarted actor (`max_task_retries`),
so a crash costs latency, not verdicts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable

import psutil
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from guardstream.workers.pools.specs import ActorSpec


def named(actor_class, prefix: str, namespace: str, spec: ActorSpec) -> list:
    """The actors `{prefix}-0..{spec.actors - 1}` in `namespace`: found when they exist, else created
    (atomically, so workers that start together share them), each reserving the spec's CPUs and
    GPUs. Detached: they outlive the process that made them, so no worker's exit takes them along.
    The engine runs as many torch threads as whole CPUs it reserved."""
    threads = max(1, int(spec.actor_cpus)) if spec.actor_cpus else 1
    return [actor_class.options(name=f"{prefix}-{i}", namespace=namespace, lifetime="detached", get_if_exists=True,
                                num_cpus=spec.actor_cpus, num_gpus=spec.actor_gpus).remote(spec, threads)
            for i in range(spec.actors)]


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


async def gather(calls: Iterable[Awaitable], timeout_s: float, unavailable: type[Exception],
                 sent: list[ray.ObjectRef] | None = None) -> list:
    """Every call's answer, in order; `unavailable` when any Ray error came back (a dead or
    restarting actor, a lost object or node, a failed task) or the pool did not answer within the
    timeout (the caller retries, then applies its fail mode). The Ray calls given as `calls`, and
    those in `sent` (made inside them), are cancelled when the answer is not wanted any more."""
    calls = list(calls)
    refs = [c for c in calls if isinstance(c, ray.ObjectRef)] + (sent if sent is not None else [])
    try:
        return await asyncio.wait_for(asyncio.gather(*calls), timeout_s)
    except (RayError, asyncio.TimeoutError) as exc:
        for ref in refs:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - best effort: a finished or lost call needs no cancelling
                pass
        raise unavailable(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

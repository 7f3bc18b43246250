"""The model pool of one app: named Ray actors that every worker of the app shares.

In the Ray namespace `guardstream-<app id>` live `gen-0..N-1` (GenGuard), `stream-0..M-1`
(StreamGuard) and `manifest`, which holds the `PoolSpec` they were created with. `guardstream pool`
creates them, or the first worker of the app does (`pool=create`, get-if-exists). The manifest is
written last, once every actor has loaded its model, so a worker that finds it finds a pool that
answers. Workers size nothing themselves: models, counts and devices come from the manifest, so
every worker hashes a stream session over the same actors and a rebalance leaves sessions in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import ray

from guardstream.workers.pools import actors
from guardstream.workers.pools.gen_pool import GenGuard
from guardstream.workers.pools.specs import PoolSpec
from guardstream.workers.pools.stream_pool import StreamGuard

log = logging.getLogger(__name__)

MANIFEST = "manifest"
POLL_S = 2.0


class PoolMissing(RuntimeError):
    pass


@ray.remote(num_cpus=0, max_restarts=-1)
class Manifest:
    def __init__(self, spec: PoolSpec):
        self._spec = spec

    def spec(self) -> PoolSpec:
        return self._spec


def namespace(app_id: str) -> str:
    return f"guardstream-{app_id}"


def _actor_handles(spec: PoolSpec, ns: str) -> dict[str, list]:
    """Every actor of the spec, found or created: {"gen": [...], "stream": [...]}."""
    return {"gen": actors.named(GenGuard, "gen", ns, spec.gen) if spec.gen else [],
            "stream": actors.named(StreamGuard, "stream", ns, spec.stream) if spec.stream else []}


def find_pool(app_id: str) -> PoolSpec | None:
    """The spec of the app's pool if it is complete (its manifest written), else None."""
    try:
        manifest = ray.get_actor(MANIFEST, namespace=namespace(app_id))
    except ValueError:
        return None
    return ray.get(manifest.spec.remote(), timeout=60)


def ensure_pool(spec: PoolSpec, app_id: str, timeout_s: float = 900) -> PoolSpec:
    """The app's pool as it exists, whatever it was created with; else this spec's, created now and
    returned once every actor has loaded its model."""
    found = find_pool(app_id)
    if found is not None:
        return found
    ns = namespace(app_id)
    log.info("creating the model pool of app %s in Ray namespace %s: %s", app_id, ns, spec.describe())
    handles = _actor_handles(spec, ns)
    for key, kind, part in (("gen", "GenGuard", spec.gen), ("stream", "StreamGuard", spec.stream)):
        if part is not None:
            actors.wait_ready(handles[key], kind, part.model, timeout_s)
    manifest = Manifest.options(name=MANIFEST, namespace=ns, lifetime="detached", get_if_exists=True).remote(spec)
    return ray.get(manifest.spec.remote(), timeout=60)  # another creator's, if it won the race


def wait_for_pool(app_id: str, timeout_s: float, waiting: Callable[[float], None]) -> PoolSpec:
    """Block until the app's pool exists; `waiting(seconds so far)` is called at every poll."""
    start = time.monotonic()
    while (spec := find_pool(app_id)) is None:
        elapsed = time.monotonic() - start
        if elapsed > timeout_s:
            raise PoolMissing(f"no model pool for app {app_id!r} in Ray namespace {namespace(app_id)} after "
                              f"{elapsed:.0f}s: start one with `guardstream pool --ray-address ... --app-id {app_id}` "
                              f"(or run the worker with pool=create)")
        waiting(elapsed)
        time.sleep(POLL_S)
    return spec


def pool_handles(spec: PoolSpec, app_id: str) -> dict[str, list]:
    """Handles to the actors of an existing pool, by name."""
    ns = namespace(app_id)
    return {kind: [ray.get_actor(f"{kind}-{i}", namespace=ns) for i in range(part.actors)] if part else []
            for kind, part in (("gen", spec.gen), ("stream", spec.stream))}


def remove_pool(app_id: str) -> int:
    """Kill every actor of the app's pool, the manifest first (so no worker finds a pool being
    torn down); returns how many were killed."""
    ns = namespace(app_id)
    names = sorted((a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == ns),
                   key=lambda name: name != MANIFEST)
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=ns), no_restart=True)
        except ValueError:
            continue
    return len(names)

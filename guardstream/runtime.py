"""Starting a worker: topics, Ray, the model pool, then the Faust worker.

Ray must be up before Faust's worker starts: `ray.init()` inside a running Faust worker fails
(mode's stdout proxy has no `fileno`), and the worker runs with `redirect_stdouts=False`.
"""

from __future__ import annotations

import asyncio
import logging
import os

import faust
import ray
from transformers import AutoTokenizer

from guardstream.topology.app import create_app
from guardstream.topology.settings import Settings, SettingsError
from guardstream.topology.topics import ensure_topics
from guardstream.workers import faults
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.workers.pools.gen_pool import GenPool
from guardstream.workers.pools.local_ray import record_processes, start_local_ray
from guardstream.workers.pools.stream_pool import StreamPool
from guardstream.workers.sinks.metrics import serve_metrics

log = logging.getLogger("guardstream")


def start_ray(settings: Settings) -> None:
    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=True)
    else:
        start_local_ray(settings.ray_num_cpus, settings.home, settings.app_id)


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Run one Faust worker until it is stopped (SIGINT/SIGTERM)."""
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    faults.arm(settings.faults)
    created = asyncio.run(ensure_topics(settings, bootstrap))
    if created:
        log.info("created topics %s", ", ".join(created))
    if settings.agents & {"gen", "stream"}:  # a worker of verdict sinks only needs no model and no Ray
        model, stream_model = settings.gen_model, settings.stream_model
        if not (model and stream_model):
            raise SettingsError("a worker that runs gen or stream needs gen_model and stream_model "
                                "(`guardstream worker` picks the tiny test fixtures when none are given)")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        start_ray(settings)
    moderator = stream_moderator = None
    pools = []
    if "gen" in settings.agents:
        pool = GenPool(model, settings.gen_actors, device=settings.device, dtype=settings.dtype,
                       max_batch_size=settings.gen_batch_size, num_cpus=settings.gen_actor_cpus,
                       num_gpus=settings.gen_actor_gpus, call_timeout_s=settings.gen_call_timeout_s,
                       mode=settings.gen_mode, backend=settings.gen_backend, max_wait_ms=settings.gen_actor_wait_ms,
                       max_inflight=settings.gen_max_inflight)
        pools.append(("GenGuard", pool))
        if settings.gen_backend == "noop":
            log.warning("gen_backend=noop: every conversation is answered Safe WITHOUT a model (for benchmarks only)")
        moderator = GenModerator(settings, pool, "noop" if settings.gen_backend == "noop" else model)
    if "stream" in settings.agents:
        stream_pool = StreamPool(stream_model, settings.stream_actors, device=settings.device,
                                 dtype=settings.stream_dtype, num_cpus=settings.stream_actor_cpus,
                                 num_gpus=settings.stream_actor_gpus, max_sessions=settings.stream_max_sessions,
                                 idle_ttl_s=settings.stream_idle_ttl_s, call_timeout_s=settings.stream_call_timeout_s,
                                 kv_cache_mb=settings.stream_kv_cache_mb)
        pools.append(("StreamGuard", stream_pool))
        stream_moderator = StreamModerator(settings, stream_pool, AutoTokenizer.from_pretrained(stream_model),
                                           stream_model)
    log.info("agents: %s; loading %s", ", ".join(sorted(settings.agents)),
             ", ".join(f"{kind} x{len(p.actors)}" for kind, p in pools) or "no model")
    for kind, p in pools:
        for info in p.wait_ready():
            log.info("%s ready: %s", kind, info)
    if pools and not settings.ray_address:
        record_processes(settings.home, settings.app_id)
    serve_metrics(settings.metrics_port)
    app = create_app(settings, bootstrap, moderator, stream_moderator)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    finally:
        ray.shutdown()

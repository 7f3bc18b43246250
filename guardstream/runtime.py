"""Starting a worker: topics, Ray, the model pool, then the Faust worker.

Ray must be up before Faust's worker starts: `ray.init()` inside a running Faust worker fails
(mode's stdout proxy has no `fileno`), and the worker runs with `redirect_stdouts=False`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import faust
import ray

from guardstream.topology.agents.canary import CanaryModels
from guardstream.signals import leave_if_signalled, signalled
from guardstream.topology.app import create_app
from guardstream.topology.faust_internals import HookedWorker
from guardstream.wire.policy import PoliciesInForce
from guardstream.wire.policy_feed import PolicyFeed, check_policies_topic
from guardstream.topology.settings import Settings
from guardstream.wire.settings import SettingsError
from guardstream.wire.topics import cluster_id, ensure_topics
from guardstream.workers import faults
from guardstream.workers.engines.chat_tokenizer import ChatTokenizer
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.moderation.language import loaded_detector
from guardstream.workers.moderation.rules import GenRules, StreamRules
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.workers.pools.gen_pool import GenPool
from guardstream.workers.pools.local_ray import reap_leftovers, record_processes, start_local_ray
from guardstream.workers.pools.model_pool import (PoolMissing, ensure_pool, find_pool, namespace, pool_handles,
                                                  remove_pool, wait_for_pool)
from guardstream.workers.pools.specs import PoolSpec
from guardstream.workers.pools.stream_pool import StreamPool
from guardstream.workers.pools import actors
from guardstream.topology.health import HEALTH, serve_metrics
from guardstream.wire.metrics import STREAM_REBUILDS, record_actors

log = logging.getLogger("guardstream")
WAIT_LOG_EVERY_S = 30
RAY_CONNECT_TRIES, RAY_CONNECT_WAIT_S = 6, 5
POOL_CHECK_S = 15  # how often a worker on a shared cluster checks that its pool is still the one it joined
ACTOR_CLASS = {"gen": "GenGuard", "stream": "StreamGuard"}
WATCH_EVERY_S = 10  # the pool process checks its actors this often (well inside the probes' staleness limit)


def start_ray(settings: Settings) -> None:
    if ray.is_initialized():
        return
    if settings.pool.ray_address:
        for attempt in range(1, RAY_CONNECT_TRIES + 1):
            try:
                ray.init(address=settings.pool.ray_address, log_to_driver=True)
                return
            # ConnectionError: the head is not up yet, or Ray Client's per-driver server failed to start;
            # RuntimeError: no Ray node on this host yet (the Ray node beside a worker pod still starting)
            except (ConnectionError, RuntimeError) as exc:
                if attempt == RAY_CONNECT_TRIES:
                    raise
                log.warning("could not connect to Ray at %s (%s: %s); trying again in %ds (%d/%d)", settings.pool.ray_address,
                            type(exc).__name__, str(exc).strip().splitlines()[-1][:200], RAY_CONNECT_WAIT_S, attempt,
                            RAY_CONNECT_TRIES)
                ray.shutdown()
                time.sleep(RAY_CONNECT_WAIT_S)
    else:
        canary = settings.canary if settings.runs_canary else None  # its actors reserve CPUs of their own
        extra = math.ceil(canary.actor_cpus * ((canary.gen_model is not None) + (canary.stream_model is not None))) \
            if canary else 0
        start_local_ray(settings.pool.ray_num_cpus + extra, settings.home, settings.kafka.app_id)


def pool_spec(settings: Settings, kinds: set[str]) -> PoolSpec:
    """The pool these settings describe, for the model kinds named ("gen", "stream")."""
    return PoolSpec(gen=settings.gen if "gen" in kinds else None, stream=settings.stream if "stream" in kinds else None)


def _require_models(settings: Settings, kinds: set[str]) -> None:
    if {k for k in kinds if not getattr(settings, k).model}:
        raise SettingsError("a pool needs gen_model and stream_model for the models it hosts "
                            "(`guardstream worker` and `guardstream pool` pick the tiny test fixtures when none are given)")


def open_pool(settings: Settings) -> PoolSpec:
    """The app's model pool for this worker's agents: joined (waiting for it) or found-or-created."""
    kinds = set(settings.agents) & {"gen", "stream"}
    if settings.pool.mode == "join":
        said = [-WAIT_LOG_EVERY_S]

        def waiting(elapsed: float) -> None:
            if elapsed - said[0] >= WAIT_LOG_EVERY_S:
                said[0] = elapsed
                log.warning("waiting for the model pool of app %s in Ray namespace %s (%.0fs so far): start it with "
                            "`guardstream pool --ray-address %s --app-id %s`", settings.kafka.app_id,
                            namespace(settings.kafka.app_id), elapsed, settings.pool.ray_address or "ADDRESS", settings.kafka.app_id)

        spec = wait_for_pool(settings.kafka.app_id, settings.pool.wait_s, waiting)
    else:
        _require_models(settings, kinds)
        wanted = pool_spec(settings, kinds)
        spec = ensure_pool(wanted, settings.kafka.app_id)
        if spec != wanted:
            log.warning("the model pool of app %s already exists and is used as it was created: %s (these settings "
                        "asked for %s)", settings.kafka.app_id, spec.describe(), wanted.describe())
    if absent := spec.missing(kinds):
        raise PoolMissing(f"the model pool of app {settings.kafka.app_id} hosts no {' or '.join(sorted(absent))} model, which "
                          f"this worker's agents need: create the pool with it, or run those agents under another app id")
    log.info("model pool of app %s: %s", settings.kafka.app_id, spec.describe())
    return spec


def announce_actors(spec: PoolSpec, handles: dict[str, list], timeout_s: float = 600) -> None:
    """Log each actor's identity once it answers: which processes serve this app (the same pids in
    every worker of a shared pool)."""
    for kind, part in (("gen", spec.gen), ("stream", spec.stream)):
        if part is not None:
            for info in actors.wait_ready(handles[kind], ACTOR_CLASS[kind], part.model, timeout_s):
                log.info("%s ready: %s", ACTOR_CLASS[kind], info)


def moderators(settings: Settings, spec: PoolSpec,
               policies: PoliciesInForce) -> tuple[GenModerator | None, StreamModerator | None]:
    """The moderators of the agents these settings run, on the pool `spec` describes (the pool's
    models, counts and batch sizes, not these settings'), deciding by `policies`."""
    handles = pool_handles(spec, settings.kafka.app_id)
    announce_actors(spec, handles)
    moderator = stream_moderator = None
    detector = loaded_detector(settings.languages) if {"gen", "stream"} & settings.agents else None  # loading since the start
    if "gen" in settings.agents:
        pool = GenPool(handles["gen"], spec.gen.model, actor_batch_size=spec.gen.batch_size,
                       call_timeout_s=settings.gen.call_timeout_s, max_inflight=settings.gen.max_inflight)
        log.info("gen batches of %d records: %d actors of the pool, each batching %d", pool.records_per_batch,
                 len(handles["gen"]), spec.gen.batch_size)
        if spec.gen.backend == "noop":
            log.warning("gen_backend=noop: every conversation is answered Safe WITHOUT a model (for benchmarks only)")
        rules = GenRules(policies=policies, max_event_bytes=settings.max_event_bytes,
                         store_text=settings.sinks.audit_store_text, detector=detector)
        moderator = GenModerator(rules, pool, "noop" if spec.gen.backend == "noop" else spec.gen.model)
    if "stream" in settings.agents:
        stream_pool = StreamPool(handles["stream"], spec.stream.model, call_timeout_s=settings.stream.call_timeout_s)
        s = settings.stream
        rules = StreamRules(policies=policies, max_event_bytes=settings.max_event_bytes, debounce=s.debounce,
                            gap_timeout_s=s.gap_timeout_s, max_held_chunks=s.max_held_chunks, max_tokens=s.max_tokens,
                            detector=detector)
        stream_moderator = StreamModerator(rules, stream_pool,
                                           ChatTokenizer.from_pretrained(spec.stream.model), spec.stream.model,
                                           on_rebuild=STREAM_REBUILDS.inc)
    return moderator, stream_moderator


def preload_detector(languages: tuple[str, ...]) -> None:
    """The detector, loading beside Ray and the pool; a failure here is raised again where the
    moderators ask for it."""
    try:
        loaded_detector(languages)
    except Exception as exc:  # noqa: BLE001 - `moderators` loads it again and raises what it raises
        log.warning("the language detector did not load beside the pool (%s); it is tried again", exc)


def load_canary_beside(settings: Settings, policies: PoliciesInForce) -> Future:
    """The canary's models, loading in a thread of their own: the worker starts and enforces
    meanwhile, and the canary joins when they are there (None: they could not be opened)."""
    loading: Future = Future()
    threading.Thread(target=lambda: loading.set_result(open_canary(settings, policies)), name="canary-pool", daemon=True).start()
    return loading


def open_canary(settings: Settings, policies: PoliciesInForce) -> CanaryModels | None:
    """The canary's pool (Ray app `<app id>-canary`) and its moderators; None, loudly, when it cannot
    be opened: a canary that fails (a model that does not load) never keeps the worker from enforcing."""
    canary = settings.canary_pool_settings()
    try:
        spec = open_pool(canary)
        models = CanaryModels(*moderators(canary, spec, policies))
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the enforcement path goes on without it
        log.error("canary: could not open its pool (%s: %s); this worker runs WITHOUT the canary", type(exc).__name__,
                  str(exc)[:500])
        return None
    log.warning("canary: %.1f%% of the conversations (by id) also go to %s, off the enforcement path",
                settings.canary.sample * 100, spec.describe())
    return models


def watch_pool(settings: Settings, spec: PoolSpec) -> None:
    """On a shared Ray cluster: a worker whose pool was replaced or removed stops (SIGTERM to itself,
    so Faust commits what is done), to be restarted onto the new pool instead of calling dead actors."""
    def watch() -> None:
        while True:
            time.sleep(POOL_CHECK_S)
            try:
                current = find_pool(settings.kafka.app_id)
            except Exception:  # noqa: BLE001 - Ray unreachable: the calls' own timeouts and fail modes apply
                continue
            if current != spec:
                log.error("the model pool of app %s was %s; stopping this worker so that it is restarted onto the "
                          "new one", settings.kafka.app_id, "replaced" if current else "removed")
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="pool-watch", daemon=True).start()


class GracedWorker(HookedWorker):
    """Faust's worker, with a bound on its stop: one still stopping `grace_s` after a SIGTERM, a
    SIGINT or a failed start (a stop waiting on a broker that does not answer, or on a group join)
    runs `abandon` (what ends its children) and exits with code 1, as a crash would; what it had
    not committed is redelivered."""

    def __init__(self, app: faust.App, grace_s: float, abandon: Sequence[Callable[[], None]], **kwargs):
        super().__init__(app, **kwargs)
        self._grace_s, self._abandon = grace_s, abandon
        self._stop_ended, self._grace = threading.Event(), None

    def on_stop_signal(self) -> None:
        self._start_grace()

    def install_signal_handlers(self) -> None:
        """mode's handlers replace ours: a signal that came before them, whose SystemExit was ignored
        where it landed (a finalizer), stops the worker now, as if it came after."""
        super().install_signal_handlers()
        if (signum := signalled()) is not None:
            log.warning("stopping: signal %d arrived while the worker was starting", signum)
            self.stop_as_signalled(signum)

    def on_worker_shutdown(self) -> None:
        self._start_grace()  # a stop without Faust's signal handlers: ours raised SystemExit first, or the start failed
        super().on_worker_shutdown()

    def stopped(self) -> None:
        self._stop_ended.set()

    def _start_grace(self) -> None:
        if self._grace is None:
            self._grace = threading.Thread(target=self._exit_after_grace, name="stop-grace", daemon=True)
            self._grace.start()

    def _exit_after_grace(self) -> None:
        if self._stop_ended.wait(self._grace_s):
            return
        log.error("the worker is still stopping %.0fs after the signal (shutdown_grace_s): ending its children and "
                  "exiting without the rest of its stop; records it had not committed are redelivered", self._grace_s)
        for end in self._abandon:
            try:
                end()
            except Exception:  # noqa: BLE001 - the next one still runs, and the exit below must happen
                log.exception("could not end a child process on the way out")
        sys.stderr.flush()
        os._exit(1)


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info",
               abandon: Sequence[Callable[[], None]] = ()) -> None:
    """Run one Faust worker until it is stopped (SIGINT/SIGTERM); `abandon` ends what the caller
    started for it (the embedded broker) if the stop outlasts `shutdown_grace_s`."""
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    faults.arm(settings.faults)
    created = asyncio.run(ensure_topics(settings.kafka, bootstrap))
    found = asyncio.run(cluster_id(settings.kafka, bootstrap))
    settings = settings.for_broker(found)
    log.info("broker: %s (cluster %s); fetch wait %d ms", settings.kafka.broker_kind, found, settings.kafka.fetch_max_wait_ms)
    if created:
        log.info("created topics %s", ", ".join(created))
    asyncio.run(check_policies_topic(settings.kafka, bootstrap))
    feed = PolicyFeed(settings.kafka, bootstrap, settings.policy, settings.policy_max_stale_s)
    read = asyncio.run(feed.catch_up())
    log.info("policies topic: %d records read; in force from it: %s", read,
             ", ".join(f"{k}@{v}" for k, v in sorted(feed.policies.set_versions().items())) or "none")
    serve_metrics(settings.metrics_port, settings.metrics_host, settings.health_port)  # probes answer (not ready) while the pool loads
    moderator = stream_moderator = canary_loading = None
    agents = ", ".join(sorted(settings.agents))
    if not settings.agents & {"gen", "stream"} and not settings.runs_canary:  # verdict sinks need no model, no Ray
        log.info("agents: %s; loading no model", agents)
    else:
        log.info("agents: %s; opening the model pool of app %s", agents, settings.kafka.app_id)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        with HEALTH.busy(f"opening the model pool of app {settings.kafka.app_id}"):  # alive, not ready, meanwhile
            if settings.agents & {"gen", "stream"}:  # its process loads while Ray and the pool start (`moderators` waits)
                threading.Thread(target=preload_detector, args=(settings.languages,), name="detector", daemon=True).start()
            start_ray(settings)
            canary_loading = load_canary_beside(settings, feed.policies) if settings.runs_canary else None  # never waited for
            spec = open_pool(settings) if settings.agents & {"gen", "stream"} else None
        if spec is not None:
            moderator, stream_moderator = moderators(settings, spec, feed.policies)
        if settings.pool.ray_address and spec is not None:
            watch_pool(settings, spec)
        else:
            record_processes(settings.home, settings.kafka.app_id)
            abandon = [lambda: reap_leftovers(settings.home, settings.kafka.app_id), *abandon]
    app = create_app(settings, bootstrap, moderator, stream_moderator, feed, canary_loading)
    worker = GracedWorker(app, settings.shutdown_grace_s, abandon, loglevel=loglevel, redirect_stdouts=False,
                          override_logging=False)
    try:
        leave_if_signalled()  # a signal whose SystemExit was ignored where it landed still stops the start
        worker.execute_from_commandline()
    finally:
        ray.shutdown()
        worker.stopped()


def run_pool(settings: Settings, loglevel: str = "info", down: bool = False) -> None:
    """Create the app's model pool on the Ray cluster at `settings.pool.ray_address` (replacing one created
    with other settings) and watch it until stopped. Stopping leaves the actors running for the
    workers; `down` removes them."""
    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    start_ray(settings)
    if down:
        log.info("removed the model pool of app %s (%d actors) and its canary's (%d actors)", settings.kafka.app_id,
                 remove_pool(settings.kafka.app_id), remove_pool(settings.canary_app_id))
        return
    kinds = {"gen", "stream"}
    _require_models(settings, kinds)
    wanted = pool_spec(settings, kinds)
    found = find_pool(settings.kafka.app_id)
    if found is not None and found != wanted:
        log.warning("the model pool of app %s runs %s; replacing it with %s (restart the app's workers, which hold "
                    "handles to the old actors)", settings.kafka.app_id, found.describe(), wanted.describe())
        remove_pool(settings.kafka.app_id)
    serve_metrics(settings.metrics_port, settings.metrics_host, settings.health_port)  # up before the models load: a slow first
    with HEALTH.busy(f"loading the models of app {settings.kafka.app_id}: {wanted.describe()}"):  # download is alive
        spec = ensure_pool(wanted, settings.kafka.app_id)
    handles = pool_handles(spec, settings.kafka.app_id)
    announce_actors(spec, handles)
    HEALTH.update(True, "watching the pool", True, spec.describe())
    log.info("model pool of app %s ready in Ray namespace %s: %s", settings.kafka.app_id, namespace(settings.kafka.app_id),
             spec.describe())
    while True:
        try:
            answers = {kind: actors.wait_ready(h, ACTOR_CLASS[kind], getattr(spec, kind).model, WATCH_EVERY_S)
                       for kind, h in handles.items() if h}
        except RuntimeError as exc:  # a dead or busy actor: Ray restarts it; the probe says so meanwhile
            log.warning("model pool of app %s not answering: %s", settings.kafka.app_id, exc)
            HEALTH.update(True, "watching the pool", False, str(exc))
        else:
            for kind, reports in answers.items():
                record_actors(kind, reports)
            HEALTH.update(True, "watching the pool", True, spec.describe())
        time.sleep(WATCH_EVERY_S)

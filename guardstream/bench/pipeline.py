"""`guardstream bench pipeline`: conversation events through the embedded broker → a Faust worker →
its GenGuard Ray actor → the engine → verdicts, measured from outside like a client would.

- engine alone: the same events through `GenEngine.classify` in this process, in the batches the
  actor would run, with the actor's thread count; the pipeline's efficiency is its events/s over this.
- pipeline: a real `guardstream worker` process. Throughput is measured on a burst (every event
  produced at once, until the last verdict arrives); latency, produce to verdict, on a second run
  paced at half that throughput, since under a burst it would only measure the backlog.
- plumbing ceiling: the same worker with `gen_backend=noop`, which answers without a model; and
  again with events that name their language, so the worker detects none (the detector's cost).

The workers run the Gen agent only (`agents=gen`) unless told otherwise: the verdict sinks
(enforcement, audit, analytics) are consumers of the verdict topic that scale on their own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from guardstream.bench.profile import Profile
from guardstream.bench.timing import Measurement, results_table, time_batches
from guardstream.dev.broker import EmbeddedBroker, free_port
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.dev.worker_process import WorkerProcess
from guardstream.kafka_io import topic_name
from guardstream.topology.settings import Settings


def bench_events(count: int, run: str, language: str | None = None) -> list[dict]:
    """Conversation events from the fixture corpus, with ids unique to this run, over three tenants;
    with `language`, each names it (so the worker detects none)."""
    corpus = load_corpus()
    return [{"event_id": f"{run}-{i}", "conversation_id": f"{run}-c{i}", "tenant": ("acme", "globex", "initech")[i % 3],
             "moderate": corpus[i % len(corpus)].kind, "messages": corpus[i % len(corpus)].messages,
             **({"language": language} if language else {})} for i in range(count)]


def measure_engine_alone(model: str, events: list[dict], batch: int, threads: int) -> Measurement:
    import torch

    from guardstream.schemas import Moderate
    from guardstream.workers.engines.gen_engine import GenEngine
    from guardstream.workers.engines.messages import GenRequest

    torch.set_num_threads(threads)
    engine = GenEngine(model, max_batch_size=batch)
    requests = [GenRequest(e["messages"], Moderate(e["moderate"])) for e in events]
    engine.classify(requests[:batch])  # warm-up (and the prefix KV)
    seconds, latencies = time_batches(requests, batch, engine.classify)  # in arrival order, as the actor gets them
    return Measurement("engine alone (GenEngine.classify)", batch, len(requests), seconds, latencies)


class VerdictClock:
    """Reads the verdict topic for the whole measurement and notes when each event's verdict arrived."""

    def __init__(self, settings: Settings, bootstrap: str):
        # no consumer group: a group's first join on the embedded broker waits seconds
        self.consumer = AIOKafkaConsumer(topic_name(settings, "verdicts"), bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="earliest", **settings.kafka.client_options())
        self.arrived: dict[str, float] = {}

    async def __aenter__(self) -> VerdictClock:
        await self.consumer.start()
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await self.consumer.stop()

    async def _read(self) -> None:
        async for message in self.consumer:
            self.arrived[json.loads(message.value)["source_event_id"]] = time.monotonic()


async def produce_and_wait(settings: Settings, bootstrap: str, clock: VerdictClock, events: list[dict],
                           rate: float | None, timeout_s: float,
                           halfway: Callable[[], None] | None = None) -> tuple[dict[str, float], float]:
    """Produce the events (all at once, or `rate` per second; `halfway` is called before the middle
    one) and wait for each one's verdict: when each event was produced, and when the middle one was."""
    sent: dict[str, float] = {}
    middle = 0.0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, **settings.kafka.client_options())
    await producer.start()
    try:
        topic, began = topic_name(settings, "conversations"), time.monotonic()
        for i, event in enumerate(events):
            if rate:
                await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            if i == len(events) // 2:
                if halfway is not None:
                    halfway()
                middle = time.monotonic()
            sent[event["event_id"]] = time.monotonic()
            await producer.send(topic, json.dumps(event).encode(), key=event["conversation_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    deadline = time.monotonic() + timeout_s
    while (missing := [e for e in sent if e not in clock.arrived]) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(events)} events got no verdict within {timeout_s:.0f}s")
    return sent, middle


async def _run_events(settings: Settings, bootstrap: str, clock: VerdictClock, events: list[dict], rate: float | None,
                      timeout_s: float) -> tuple[float, list[float]]:
    """(first produce to last verdict in s, produce-to-verdict latencies in ms)."""
    sent, _ = await produce_and_wait(settings, bootstrap, clock, events, rate, timeout_s)
    last = max(clock.arrived[e] for e in sent)
    return last - min(sent.values()), [(clock.arrived[e] - t) * 1000 for e, t in sent.items()]


async def _measure(settings: Settings, bootstrap: str, run: str, events: int, batch: int,
                   timeout_s: float, language: str | None) -> tuple[float, list[float]]:
    async with VerdictClock(settings, bootstrap) as clock:
        # the consumer group's first join and the prefix KV happen here, not in the timed runs
        await _run_events(settings, bootstrap, clock, bench_events(batch, f"{run}-warm", language), None, timeout_s)
        seconds, _ = await _run_events(settings, bootstrap, clock, bench_events(events, f"{run}-burst", language), None,
                                       timeout_s)
        paced = min(events, max(batch * 4, events // 2))
        _, latencies = await _run_events(settings, bootstrap, clock, bench_events(paced, f"{run}-paced", language),
                                         events / seconds / 2, timeout_s)
    return seconds, latencies


def measure_pipeline(label: str, bootstrap: str, log_path: Path, model: str, events: int, batch: int, threads: int,
                     timeout_s: float, run: str | None = None, workers: int = 1, profile: Path | None = None,
                     language: str | None = None, **worker_settings: object) -> Measurement:
    """`workers` workers of one app on topics of their own (`bench-<run>.`), started, measured and
    stopped; each has its own local Ray and model pool. With `profile`, py-spy samples the first
    worker's process while it is measured; with `language`, every event names it."""
    run = run or uuid.uuid4().hex[:6]
    started = []
    try:
        for i in range(workers):
            started.append(WorkerProcess(bootstrap, log_path.with_stem(f"{log_path.stem}-{i}") if workers > 1 else log_path,
                                         "--gen-model", model, app_id=f"bench-{run}", topic_prefix=f"bench-{run}.",
                                         gen_batch_size=batch, gen_actor_cpus=threads, metrics_port=free_port(),
                                         **worker_settings).wait_ready())
        spy = Profile(started[0].process.pid, profile) if profile else None
        seconds, latencies = asyncio.run(_measure(started[0].settings, bootstrap, run, events, batch, timeout_s, language))
        top = spy.stop() if spy else []
    finally:
        for worker in started:
            worker.stop()
    return Measurement(label, batch, events, seconds, latencies, profile=tuple(top))


def run_pipeline_bench(model: str, events: int, batch: int, noop_events: int, noop_batch: int, threads: int,
                       home: Path, report: Callable[[Measurement], None], agents: str = "gen",
                       timeout_s: float = 600, workers: tuple[int, ...] = (1,),
                       profile: Path | None = None, canary: float | None = None) -> list[Measurement]:
    """The engine alone, then the pipeline and the plumbing with one worker (profiled into
    `profile` if given), then the plumbing with each other count of `workers` on the same topics
    (events/s is theirs together). With `canary` (a share), the pipeline and the one-worker
    plumbing again with a canary of the same model on that share of the conversations: what a
    canary costs the enforcement path."""
    with_canary = dict(agents=f"{agents},canary", canary=json.dumps({"gen_model": model, "sample": canary}))
    corpus_events = bench_events(events, "engine")
    results = [measure_engine_alone(model, corpus_events, batch, threads)]
    report(results[-1])
    home.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=home / "bench-broker.log") as broker:
        results.append(measure_pipeline("pipeline: broker → Faust → Ray → engine", broker.bootstrap,
                                        home / "bench-worker.log", model, events, batch, threads, timeout_s,
                                        agents=agents))
        report(results[-1])
        if canary:
            results.append(measure_pipeline(f"the same with a {canary:.0%} canary", broker.bootstrap,
                                            home / "bench-worker-canary.log", model, events, batch, threads, timeout_s,
                                            **with_canary))
            report(results[-1])
        for count in sorted(set(workers) | {1}):
            label = "plumbing: the same with a no-op engine" + (f", {count} workers" if count > 1 else "")
            results.append(measure_pipeline(label, broker.bootstrap, home / "bench-worker-noop.log", model, noop_events,
                                            noop_batch, threads, timeout_s, workers=count, agents=agents,
                                            gen_backend="noop", profile=profile if count == 1 else None))
            report(results[-1])
            if count == 1:  # what the language detector costs: the same events, each naming its language
                results.append(measure_pipeline(f"{label}, events that name their language", broker.bootstrap,
                                                home / "bench-worker-noop-named.log", model, noop_events, noop_batch,
                                                threads, timeout_s, agents=agents, gen_backend="noop", language="en"))
                report(results[-1])
            if canary and count == 1:
                results.append(measure_pipeline(f"plumbing with a {canary:.0%} canary", broker.bootstrap,
                                                home / "bench-worker-noop-canary.log", model, noop_events, noop_batch,
                                                threads, timeout_s, gen_backend="noop", **with_canary))
                report(results[-1])
    return results


def pipeline_table(results: list[Measurement], title: str):
    """The engine alone, the pipeline and the plumbing, each as a share of the engine alone."""
    engine = results[0]
    rows = [(m.label, str(m.batch), f"{m.count:,}", f"{m.per_second:,.1f}", f"{m.percentile(0.5):.1f}",
             f"{m.percentile(0.99):.1f}", f"{m.per_second / engine.per_second:.2f}") for m in results]
    return results_table(title, ("path", "batch", "events", "events/s", "p50 ms", "p99 ms", "× engine alone"), rows)

"""`guardstream bench stream-pipeline`: reply streams from a gateway, through a broker (the embedded
Tansu, a one-node Apache Kafka, or each in turn) → a Faust worker running the stream agent → its
StreamGuard actor → verdicts, measured at the client. The worker keeps its defaults for the broker
it finds unless a fetch wait is given.

- broker floor: records produced and consumed through the same broker with no worker, read the
  way the client reads verdicts: the part of a chunk's latency that no worker can remove;
- engine alone: `StreamEngine` steps over N streams' chunks in this process, the actor's own work;
- pipeline: N streams through `guardstream.client`, each pushing k token ids every k/R seconds, as
  a gateway relays a reply while it is generated. Every fourth stream turns unsafe at a known token.

Chunk latency is produce to verdict; the worker's CPU per chunk is its process's CPU time over a
run (its actor's is apart) divided by the chunks sent. A stopped stream's stop lag is the time from producing the
chunk that holds its stop token to the stop's arrival, and the reply tokens the gateway sent past
that chunk meanwhile (a user would have seen them). The worker kept up when the latency of the
run's last third is not well above that of its first third (a backlog grows it).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from guardstream.bench.stream import IM_END, measure_engine
from guardstream.bench.timing import Measurement, percentile, results_table
from guardstream.client import Guard, GuardedStream
from guardstream.verdict_reader import FETCH_WAIT_MS
from guardstream.dev.broker import EmbeddedBroker
from guardstream.dev.kafka import KafkaCluster
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.dev.worker_process import WorkerProcess
from guardstream.topology.settings import Settings

UNSAFE_EVERY = 4  # streams 0, 4, 8, ... turn unsafe
TENANT = "bench"


@dataclass(frozen=True)
class Reply:
    prompt: str
    ids: list[int]
    unsafe_at: int | None  # the reply token where the corpus's unsafe text begins


class BrokerRuns(NamedTuple):
    floor: list[float]  # the broker alone, ms
    runs: list[StreamsRun]


@dataclass(frozen=True)
class StreamsRun:
    """One pipeline measurement: N streams at R tokens/s in chunks of k."""

    streams: int
    chunk: int
    latencies_ms: list[float]  # per chunk, in the order the chunks were produced
    stop_lag_ms: list[float]
    stop_lag_tokens: list[int]
    unsafe_streams: int
    worker_cpu_s: float  # the worker process's CPU time over the run (its actor runs in another process)

    @property
    def worker_cpu_us_per_chunk(self) -> float:
        return self.worker_cpu_s * 1e6 / max(1, len(self.latencies_ms))

    @property
    def kept_up(self) -> bool:
        third = max(1, len(self.latencies_ms) // 3)
        first, last = self.latencies_ms[:third], self.latencies_ms[-third:]
        return percentile(last, 0.5) <= 1.5 * percentile(first, 0.5) + 20


def bench_replies(tokenizer, streams: int, reply_tokens: int) -> list[Reply]:
    """Replies of about `reply_tokens` Qwen3 ids from the fixture corpus: safe replies back to back,
    and in every fourth stream an unsafe corpus reply from the middle on."""
    corpus = [x for x in load_corpus() if x.kind == "response"]
    safe = [x for x in corpus if x.label == "Safe"]
    unsafe = [x for x in corpus if x.label == "Unsafe" and x.unsafe_from is not None]

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    replies = []
    for i in range(streams):
        filler, k = [], i
        while len(filler) < reply_tokens:
            filler += ids(safe[k % len(safe)].messages[1]["content"] + " ")
            k += 1
        filler, unsafe_at = filler[:reply_tokens], None
        if i % UNSAFE_EVERY == 0:
            example = unsafe[(i // UNSAFE_EVERY) % len(unsafe)]
            text = example.messages[1]["content"]
            head, tail = ids(text[: example.unsafe_from]), ids(text[example.unsafe_from :])
            cut = max(0, reply_tokens // 2 - len(head))
            filler, unsafe_at = filler[:cut] + head + tail + filler[cut:], cut + len(head)
        replies.append(Reply(safe[i % len(safe)].messages[0]["content"], filler, unsafe_at))
    return replies


async def measure_broker_floor(settings: Settings, bootstrap: str, count: int = 300, per_s: float = 100) -> list[float]:
    """Produce to consume in ms, one record at a time, on a topic of its own with no worker."""
    topic = f"bench-floor-{uuid.uuid4().hex[:6]}"
    options = settings.kafka.client_options()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, settings.kafka.topic_replication)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, **options)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=FETCH_WAIT_MS, **options)
    await producer.start()
    await consumer.start()
    arrived: dict[int, float] = {}

    async def read() -> None:
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    arrived[int(record.value)] = time.monotonic()

    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        await consumer.position(partition)
        reader, sent = asyncio.create_task(read()), {}
        for i in range(count):
            sent[i] = time.monotonic()
            await (await producer.send(topic, str(i).encode()))
            await asyncio.sleep(1 / per_s)
        deadline = time.monotonic() + 10
        while len(arrived) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        reader.cancel()
        return [(arrived[i] - t) * 1000 for i, t in sent.items() if i in arrived]
    finally:
        await consumer.stop()
        await producer.stop()


async def _guard_one(stream: GuardedStream, reply: Reply, chunk: int, tokens_per_s: float, offset_s: float,
                     sent: list[tuple[float, GuardedStream, int]], lag_ms: list[float], lag_tokens: list[int]) -> None:
    """Push one reply at its pace, as a gateway relays it, cutting it when told to."""
    async with stream:
        await asyncio.sleep(offset_s)
        began, sent_at, pushed = time.monotonic(), {}, 0
        for seq, start in enumerate(range(0, len(reply.ids), chunk)):
            await asyncio.sleep(max(0.0, began + start / tokens_per_s - time.monotonic()))
            if stream.stopped.is_set():
                break
            sent_at[seq] = time.monotonic()
            sent.append((sent_at[seq], stream, seq))
            await stream.push(reply.ids[start : start + chunk])
            pushed = min(len(reply.ids), start + chunk)
        await stream.finish(timeout=60)
        if stream.stop_token is not None:
            stop_chunk = stream.stop_token // chunk
            lag_ms.append((stream.stopped_at - sent_at[stop_chunk]) * 1000)
            lag_tokens.append(pushed - min(len(reply.ids), (stop_chunk + 1) * chunk))


async def measure_streams(guard: Guard, replies: list[Reply], chunk: int, tokens_per_s: float,
                          worker_cpu: Callable[[], float] = lambda: 0.0) -> StreamsRun:
    run, cpu_before = uuid.uuid4().hex[:6], worker_cpu()
    sent: list[tuple[float, GuardedStream, int]] = []
    lag_ms: list[float] = []
    lag_tokens: list[int] = []
    period = chunk / tokens_per_s
    await asyncio.gather(*(
        _guard_one(guard.stream(f"{run}-c{i}", reply.prompt, tenant=TENANT, stream_id=f"{run}-s{i}"), reply, chunk,
                   tokens_per_s, period * (i % 16) / 16, sent, lag_ms, lag_tokens)  # streams do not start in step
        for i, reply in enumerate(replies)))
    cpu_s = worker_cpu() - cpu_before
    sent.sort(key=lambda item: item[0])
    missing = sum(seq not in stream.verdict_at for _, stream, seq in sent)
    if missing:
        raise RuntimeError(f"{missing} of {len(sent)} chunks got no verdict")
    return StreamsRun(len(replies), chunk, [(stream.verdict_at[seq] - at) * 1000 for at, stream, seq in sent],
                      lag_ms, lag_tokens, sum(r.unsafe_at is not None for r in replies), cpu_s)


def measure_engine_alone(checkpoint: str, prompt: list[int], streams: int, chunk: int, reply_tokens: int,
                         threads: int) -> Measurement:
    import torch

    from guardstream.workers.engines.qwen3 import load_checkpoint
    from guardstream.workers.engines.stream_engine import StreamEngine

    torch.set_num_threads(threads)
    config, weights = load_checkpoint(checkpoint)
    engine = StreamEngine(config, weights, device="cpu", dtype=torch.float32, im_end_id=IM_END, max_sessions=streams)
    measure_engine(engine, prompt, 1, chunk, chunk * 2, config["vocab_size"], lambda: None)  # warm-up
    m = measure_engine(engine, prompt, streams, chunk, reply_tokens, config["vocab_size"], lambda: None)
    return Measurement(f"engine alone, {streams} streams", streams, m.count, m.seconds, m.latencies_ms, chunk=chunk)


def run_stream_pipeline_bench(checkpoint: str, streams: list[int], chunk: int, tokens_per_s: float, reply_tokens: int,
                              threads: int, fetch_wait_ms: int | None, brokers: list[str], home: Path,
                              report: Callable[[str], None]) -> tuple[list[Measurement], dict[str, BrokerRuns]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    prompt = tokenizer("tell me about the weather where you are<|im_end|>", add_special_tokens=False)["input_ids"]
    engine = []
    for n in streams:
        engine.append(measure_engine_alone(checkpoint, prompt, n, chunk, reply_tokens, threads))
        report(f"engine alone, {n} streams: step p50 {engine[-1].percentile(0.5):.1f} ms")
    home.mkdir(parents=True, exist_ok=True)
    measured = {}
    for name in brokers:
        run = uuid.uuid4().hex[:6]
        wait = {} if fetch_wait_ms is None else {"kafka_fetch_max_wait_ms": fetch_wait_ms}
        with bench_broker(name, home) as broker:
            worker = WorkerProcess(broker.bootstrap, home / f"bench-stream-worker-{name}.log", "--stream-model", checkpoint,
                                   app_id=f"bench-{run}", topic_prefix=f"bench-{run}.", agents="stream",
                                   stream_actor_cpus=threads, **wait).wait_ready()
            try:
                floor = asyncio.run(measure_broker_floor(worker.settings, broker.bootstrap))
                report(f"{name}: broker floor p50 {percentile(floor, 0.5):.1f} ms")
                runs = asyncio.run(_measure_all(worker.settings, broker.bootstrap, tokenizer, streams, chunk,
                                                tokens_per_s, reply_tokens, lambda line: report(f"{name}: {line}"),
                                                process_cpu(worker.process.pid)))
            finally:
                worker.stop()
        measured[name] = BrokerRuns(floor, runs)
    return engine, measured


def bench_broker(name: str, home: Path):
    """The embedded Tansu or a one-node Apache Kafka, on loopback, for one measurement."""
    if name == "tansu":
        return EmbeddedBroker(log_path=home / "bench-broker.log")
    return KafkaCluster(directory=home / "bench-kafka")


def process_cpu(pid: int) -> Callable[[], float]:
    """The user and system CPU seconds a process has used so far, read when called."""
    process = psutil.Process(pid)
    return lambda: sum(process.cpu_times()[:2])


async def _measure_all(settings: Settings, bootstrap: str, tokenizer, streams: list[int], chunk: int,
                       tokens_per_s: float, reply_tokens: int, report: Callable[[str], None],
                       worker_cpu: Callable[[], float]) -> list[StreamsRun]:
    async with Guard(bootstrap, settings, timeout_s=60, chunk_timeout_s=60) as guard:  # latency is measured, not cut
        await measure_streams(guard, bench_replies(tokenizer, 2, chunk * 4), chunk, tokens_per_s)  # warm-up
        runs = []
        for n in streams:
            runs.append(await measure_streams(guard, bench_replies(tokenizer, n, reply_tokens), chunk, tokens_per_s,
                                              worker_cpu))
            report(f"pipeline, {n} streams: chunk p50 {percentile(runs[-1].latencies_ms, 0.5):.1f} ms, "
                   f"p99 {percentile(runs[-1].latencies_ms, 0.99):.1f} ms, worker CPU "
                   f"{runs[-1].worker_cpu_us_per_chunk:,.0f} µs/chunk")
    return runs


def stream_pipeline_table(engine: list[Measurement], measured: dict[str, BrokerRuns], title: str):
    """The engine alone, then per broker its floor and each pipeline run with its stops and stop lag."""
    blank = ("",) * 5
    rows = [("engine alone: one batched step", str(m.batch), f"{len(m.latencies_ms) // m.batch:,}",
             f"{m.percentile(0.5):.1f}", f"{m.percentile(0.99):.1f}", *blank) for m in engine]
    for name, (floor, runs) in measured.items():
        rows.append((f"{name} floor: produce → consume, no worker", "", f"{len(floor):,}",
                     f"{percentile(floor, 0.5):.1f}", f"{percentile(floor, 0.99):.1f}", *blank))
        rows += [(f"{name} pipeline: client → broker → worker → actor → client", str(r.streams),
                  f"{len(r.latencies_ms):,}", f"{percentile(r.latencies_ms, 0.5):.1f}",
                  f"{percentile(r.latencies_ms, 0.99):.1f}", f"{len(r.stop_lag_ms)}/{r.unsafe_streams}",
                  f"{percentile(r.stop_lag_ms, 0.5):.0f} / {percentile(r.stop_lag_ms, 0.99):.0f}",
                  f"{percentile(r.stop_lag_tokens, 0.5):.0f} / {percentile(r.stop_lag_tokens, 0.99):.0f}",
                  f"{r.worker_cpu_us_per_chunk:,.0f}", "yes" if r.kept_up else "no") for r in runs]
    return results_table(title, ("path", "streams", "chunks", "p50 ms", "p99 ms", "stops", "stop lag p50/p99 ms",
                                 "stop lag p50/p99 tokens", "worker CPU µs/chunk", "kept up"), rows)


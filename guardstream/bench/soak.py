"""`guardstream soak`: a capacity check for operators.

N reply streams at a time start, run and finish against a running worker for M minutes, while
the worker's own `/metrics` is read every few seconds: worker and actor memory, table entries,
changelog bytes written and consumer lag. What grows without bound shows up here before it
shows up in production.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from guardstream.bench.timing import results_table
from guardstream.kafka_io import topic_name
from guardstream.topology.settings import Settings

PROMPT = "tell me about the weather where you are"


@dataclass(frozen=True)
class Sample:
    at_s: float
    streams_started: int
    streams_finished: int
    worker_rss_mb: float
    actor_rss_mb: float
    kv_used_mb: float  # held by the Stream actors' sessions
    table_entries: int  # stream-state
    changelog_mb: float
    lag: int

    @classmethod
    def scrape(cls, metrics_url: str, at_s: float, started: int, finished: int) -> Sample:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            families = list(text_string_to_metric_families(response.read().decode()))

        def total(name: str, **labels: str) -> float:
            return sum(s.value for f in families for s in f.samples
                       if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

        return cls(at_s, started, finished, total("process_resident_memory_bytes") / 2**20,
                   total("guardstream_actor_rss_bytes") / 2**20, total("guardstream_actor_kv_bytes", kind="used") / 2**20,
                   int(total("guardstream_table_entries", table="stream-state")),
                   total("guardstream_changelog_bytes_total") / 2**20, int(total("guardstream_consumer_lag")))


async def run_soak(settings: Settings, bootstrap: str, metrics_url: str, streams: int, minutes: float,
                   reply_tokens: int = 24, chunk_tokens: int = 4, tokens_per_s: float = 30, every_s: float = 10,
                   report: Callable[[Sample], None] = lambda s: None) -> list[Sample]:
    """Keep `streams` streams going for `minutes`; returns the samples, the last one taken after every
    stream finished."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings.kafka_client_options())
    await producer.start()
    topic, began = topic_name(settings, "chunks"), time.monotonic()
    counts = {"started": 0, "finished": 0}
    numbers = itertools.count()

    async def one_stream(lane: int) -> None:
        rng = random.Random(lane)
        while time.monotonic() - began < minutes * 60:
            n = next(numbers)
            ids = [rng.randrange(3, 200) for _ in range(reply_tokens)]
            pieces = [ids[i: i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]
            conversation = f"soak-{lane}"
            counts["started"] += 1
            for seq, piece in enumerate(pieces):
                event = {"event_id": f"soak-{n}-{seq}", "conversation_id": conversation, "stream_id": f"soak-{n}",
                         "tenant": "soak", "seq": seq, "token_ids": piece, "final": seq == len(pieces) - 1,
                         **({"prompt": PROMPT} if seq == 0 else {})}
                await producer.send_and_wait(topic, json.dumps(event).encode(), key=conversation.encode())
                await asyncio.sleep(len(piece) / tokens_per_s)
            counts["finished"] += 1

    async def sample_every() -> list[Sample]:
        samples = []
        while time.monotonic() - began < minutes * 60:
            samples.append(await asyncio.to_thread(Sample.scrape, metrics_url, time.monotonic() - began,
                                                   counts["started"], counts["finished"]))
            report(samples[-1])
            await asyncio.sleep(every_s)
        return samples

    try:
        samples, *_ = await asyncio.gather(sample_every(), *(one_stream(lane) for lane in range(streams)))
    finally:
        await producer.stop()
    samples.append(await asyncio.to_thread(Sample.scrape, metrics_url, time.monotonic() - began, counts["started"],
                                           counts["finished"]))
    report(samples[-1])
    return samples


def soak_table(samples: list[Sample]):
    """The first and the last sample, side by side: what grew."""
    rows = [(f"{s.at_s:.0f}", f"{s.streams_started:,}", f"{s.worker_rss_mb:,.0f}", f"{s.actor_rss_mb:,.0f}",
             f"{s.kv_used_mb:,.1f}", f"{s.table_entries:,}", f"{s.changelog_mb:,.1f}", f"{s.lag:,}")
            for s in (samples[0], samples[-1])]
    return results_table("soak: first and last sample", ("at s", "streams", "worker RSS MB", "actors RSS MB", "KV MB",
                                                         "stream table", "changelog MB", "lag"), rows)

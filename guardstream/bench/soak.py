"""`guardstream soak`: a capacity check for operators.

N reply streams at a time start, run and finish against a running worker for M minutes, and
(`verdicts_per_s`) distinct verdicts arrive at a steady rate for its analytics agents, while the
worker's own `/metrics` is read every few seconds: worker and actor memory, table entries,
changelog bytes written and consumer lag. What grows without bound shows up here before it
shows up in production; with short analytics windows and a long retention, hours of traffic
compress into minutes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from guardstream.bench.timing import metric_totals, results_table
from guardstream.kafka_io import topic_name
from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent, verdict_id
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
    verdicts_sent: int = 0
    analytics_entries: int = 0  # remembered verdict ids and counted entries


    @classmethod
    def scrape(cls, metrics_url: str, at_s: float, started: int, finished: int, verdicts: int = 0) -> Sample:
        total = metric_totals(metrics_url)
        return cls(at_s, started, finished, total("process_resident_memory_bytes") / 2**20,
                   total("guardstream_actor_rss_bytes") / 2**20, total("guardstream_actor_kv_bytes", kind="used") / 2**20,
                   int(total("guardstream_table_entries", table="stream-state")),
                   total("guardstream_changelog_bytes_total") / 2**20, int(total("guardstream_consumer_lag")), verdicts,
                   int(total("guardstream_table_entries", table="analytics-routed")
                       + total("guardstream_table_entries", table="analytics-counted")))


async def run_soak(settings: Settings, bootstrap: str, metrics_url: str, streams: int, minutes: float,
                   reply_tokens: int = 24, chunk_tokens: int = 4, tokens_per_s: float = 30, every_s: float = 10,
                   report: Callable[[Sample], None] = lambda s: None, verdicts_per_s: float = 0) -> list[Sample]:
    """Keep `streams` streams going, and verdicts coming at `verdicts_per_s`, for `minutes`; returns
    the samples, the last one taken after every stream finished."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings.kafka.client_options())
    await producer.start()
    topic, began = topic_name(settings, "chunks"), time.monotonic()
    counts = {"started": 0, "finished": 0, "verdicts": 0}
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

    async def verdicts() -> None:
        """Distinct verdicts, in batches every 0.1 s, each as the verdict topic carries it."""
        verdict_topic = topic_name(settings, "verdicts")
        while (elapsed := time.monotonic() - began) < minutes * 60:
            due = int(elapsed * verdicts_per_s) - counts["verdicts"]
            sends = [await producer.send(verdict_topic, v.model_dump_json().encode(), key=v.conversation_id.encode())
                     for v in map(soak_verdict, range(counts["verdicts"], counts["verdicts"] + due))]
            await asyncio.gather(*sends)
            counts["verdicts"] += due
            await asyncio.sleep(0.1)

    async def sample_every() -> list[Sample]:
        samples = []
        while time.monotonic() - began < minutes * 60:
            samples.append(await asyncio.to_thread(Sample.scrape, metrics_url, time.monotonic() - began,
                                                   counts["started"], counts["finished"], counts["verdicts"]))
            report(samples[-1])
            await asyncio.sleep(every_s)
        return samples

    try:
        samples, *_ = await asyncio.gather(sample_every(), *(one_stream(lane) for lane in range(streams)),
                                           *([verdicts()] if verdicts_per_s > 0 else []))
    finally:
        await producer.stop()
    samples.append(await asyncio.to_thread(Sample.scrape, metrics_url, time.monotonic() - began, counts["started"],
                                           counts["finished"], counts["verdicts"]))
    report(samples[-1])
    return samples


def soak_verdict(n: int) -> VerdictEvent:
    """The n-th soak verdict: its own id, one of a few tenants, risks and categories."""
    risk, categories = [(RiskLevel.safe, []), (RiskLevel.unsafe, ["Violent"]), (RiskLevel.controversial, ["PII"])][n % 3]
    tenant, conversation = f"soak-{n % 4}", f"soak-verdicts-{n % 1000}"
    return VerdictEvent(verdict_id=verdict_id(tenant, conversation, f"soak-v{n}", "soak", Moderate.prompt, str(n), None),
                        source_event_id=f"soak-v{n}", conversation_id=conversation, tenant=tenant,
                        moderate=Moderate.prompt, model_id="soak", model_variant="gen", risk_level=risk,
                        categories=categories, action=Action.allow, policy="soak", latency_ms=1.0)


def soak_table(samples: list[Sample]):
    """The first and the last sample, side by side: what grew."""
    rows = [(f"{s.at_s:.0f}", f"{s.streams_started:,}", f"{s.verdicts_sent:,}", f"{s.worker_rss_mb:,.0f}",
             f"{s.actor_rss_mb:,.0f}", f"{s.kv_used_mb:,.1f}", f"{s.table_entries:,}", f"{s.analytics_entries:,}",
             f"{s.changelog_mb:,.1f}", f"{s.lag:,}") for s in (samples[0], samples[-1])]
    return results_table("soak: first and last sample", ("at s", "streams", "verdicts", "worker RSS MB", "actors RSS MB",
                                                         "KV MB", "stream table", "analytics tables", "changelog MB",
                                                         "lag"), rows)

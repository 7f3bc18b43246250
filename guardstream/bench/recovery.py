"""`guardstream bench recovery`: what a sinks worker's restart costs as its state grows, with its
tables in memory and on disk (RocksDB). For each size the `analytics-routed` changelog is filled
with that many remembered verdict ids, in the table's own format and all in the current window
(what a worker that routed that many verdicts leaves behind, none expired). Then a worker running
the analytics agents starts twice on one data directory:

- first start (a new pod): both stores replay the whole changelog;
- restart after a SIGKILL (a restarted container): memory replays it all again, RocksDB only the
  tail its disk had not applied.

Recovery time is Faust's, from its recovery's start to its end (the worker log); the replayed
records and the resident memory after it come from the worker's metrics.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from guardstream.bench.timing import metric_totals, results_table
from guardstream.dev.broker import EmbeddedBroker, free_port
from guardstream.dev.worker_process import WorkerProcess
from guardstream.topology.settings import Settings

TABLE = "analytics-routed"
STARTS = ("first start", "restart after SIGKILL")
_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] .*"


@dataclass(frozen=True)
class Recovery:
    store: str
    entries: int
    start: str
    seconds: float  # Faust's recovery, start to end
    replayed: int  # changelog records it applied
    rss_mb: float  # the worker's resident memory after it


async def fill_changelog(settings: Settings, bootstrap: str, entries: int, window: int) -> None:
    """`entries` remembered verdict ids, spread over the partitions, as `PartitionedTable` writes them."""
    topic = f"{settings.kafka.group_id}-{TABLE}-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.kafka.topic_partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for first in range(0, entries, 20_000):
            sends = []
            for i in range(first, min(entries, first + 20_000)):
                partition = i % settings.kafka.topic_partitions
                value = json.dumps({"p": partition, "v": window}).encode()
                sends.append(await producer.send(topic, value, key=json.dumps(f"bench-{i}").encode(), partition=partition))
            await asyncio.gather(*sends)
    finally:
        await producer.stop()


def recovery_seconds(log: str, after: int = 0) -> float | None:
    """From the first recovery start past character `after` of the log to the recovery's end."""
    began = re.search(_STAMP.replace(".*", r".*Recovery\]: Starting"), log[after:], re.M)
    ended = re.search(_STAMP.replace(".*", r".*Recovery\]: Recovery complete"), log[after:], re.M)
    if not began or not ended:
        return None
    parse = lambda stamp: datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return (parse(ended.group(1)) - parse(began.group(1))).total_seconds()


def _recovered(worker: WorkerProcess, port: int, store: str, entries: int, start: str,
               timeout_s: float) -> Recovery:
    deadline = time.monotonic() + timeout_s
    while (seconds := recovery_seconds(worker.log())) is None:
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not recover within {timeout_s:.0f}s; see {worker.log_path}")
        time.sleep(0.5)
    total = metric_totals(f"http://127.0.0.1:{port}/metrics")
    return Recovery(store, entries, start, seconds, int(total("guardstream_changelog_replayed_total", table=TABLE)),
                    total("process_resident_memory_bytes") / 2**20)


def run_recovery_bench(sizes: Sequence[int], stores: Sequence[str], home: Path, report: Callable[[str], None],
                       partitions: int = 8, timeout_s: float = 900) -> list[Recovery]:
    home.mkdir(parents=True, exist_ok=True)
    found = []
    with EmbeddedBroker(log_path=home / "bench-recovery-broker.log") as broker:
        for entries in sizes:
            for store in stores:
                run, port = uuid.uuid4().hex[:6], free_port()
                env = dict(app_id=f"recovery-{run}", topic_prefix=f"recovery-{run}.", agents="analytics",
                           table_store=store, topic_partitions=partitions, metrics_port=port,
                           analytics_retention_s=10**7, data_dir=home / f"bench-recovery-{run}")
                settings = Settings.load({f"GUARDSTREAM_{k.upper()}": str(v) for k, v in env.items()})
                report(f"{entries:,} entries, {store}: filling the changelog")
                asyncio.run(fill_changelog(settings, broker.bootstrap, entries, int(time.time()) // 60 * 60))
                for start in STARTS:
                    worker = WorkerProcess(broker.bootstrap, home / f"bench-recovery-{run}-{STARTS.index(start)}.log",
                                           **env).wait_ready(timeout_s)
                    try:
                        found.append(_recovered(worker, port, store, entries, start, timeout_s))
                        report(f"{entries:,} entries, {store}, {start}: {found[-1].seconds:.1f} s, "
                               f"{found[-1].replayed:,} replayed, RSS {found[-1].rss_mb:,.0f} MiB")
                    finally:
                        worker.process.send_signal(signal.SIGKILL)
                        worker.process.wait(30)
                shutil.rmtree(env["data_dir"], ignore_errors=True)  # the logs stay
    return found


def recovery_table(found: list[Recovery], title: str):
    """Each row beside the same size's first start in memory, the baseline of the run."""
    base = {r.entries: r for r in found if r.store == "memory" and r.start == STARTS[0]}
    rows = [(f"{r.entries:,} entries, {r.store}, {r.start}", f"{r.seconds:,.1f}",
             f"{r.seconds / base[r.entries].seconds:,.2f}" if r.entries in base and base[r.entries].seconds else "-",
             f"{r.replayed:,}", f"{r.rss_mb:,.0f}") for r in found]
    return results_table(title, ("state, store, start", "recovery s", "× memory first start", "replayed", "RSS MiB"), rows)

"""Injected faults: delivery, the pool call and the audit write each fail a few times, and the
audit database refuses some rows. While that happens, the committed offsets never pass a record
without an outcome; afterwards every record has one and the worker never restarted."""

from __future__ import annotations

import asyncio
import json
import uuid

import psycopg

import pytest

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import records, topic_name
from guardstream.workers.sinks.audit import PostgresAudit

from tests.helpers.pipeline import PG_ADMIN_URL, committed_offsets, start_worker, wait_drained
from tests.helpers.kafka_helpers import produce, read_all

pytestmark = pytest.mark.integration

N, REFUSED = 80, "refused"


def refusing_database() -> str:
    """A fresh database whose audit table refuses the rows of one tenant (a CHECK constraint)."""
    name = f"guardstream_faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(PostgresAudit.DDL)
        db.execute(f"ALTER TABLE guard_verdicts ADD CONSTRAINT no_refused CHECK (tenant <> '{REFUSED}')")
    return url


async def offsets_without_outcome(settings, bootstrap: str) -> list[tuple[int, int]]:
    """(partition, offset) of conversation records below the committed offset that have no outcome."""
    topic = topic_name(settings, "conversations")
    committed = await committed_offsets(bootstrap, settings.kafka.group_id, topic,
                                        list(range(settings.kafka.topic_partitions)))
    below = {p: offset for p, offset in committed.items() if offset > 0}
    answered, lettered, inputs = set(), set(), {}
    async for m in records(settings, bootstrap, "verdicts", idle_timeout_s=1):
        answered.add(json.loads(m.value)["source_event_id"])
    async for m in records(settings, bootstrap, "dlq", idle_timeout_s=1):
        d = json.loads(m.value)
        lettered.add((d["partition"], d["offset"]))
    async for m in records(settings, bootstrap, "conversations", idle_timeout_s=1):
        inputs[(m.partition, m.offset)] = json.loads(m.value)["event_id"]
    return sorted(where for where, event_id in inputs.items()
                  if where[1] < below.get(where[0], 0) and event_id not in answered and where not in lettered)


def test_injected_faults_delay_outcomes_but_never_skip_them(broker, tiny, tmp_path):
    audit_url = refusing_database()
    corpus = [ex for ex in load_corpus() if ex.kind == "prompt"]
    events = [{"event_id": f"flt-{i}", "conversation_id": f"flt-c{i}", "tenant": REFUSED if i % 10 == 3 else "acme",
               "messages": corpus[i % len(corpus)].messages} for i in range(N)]
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "worker.log", app_id="gs-faults",
                          topic_prefix="flt.", audit_url=audit_url, faults="deliver=3,pool=2,audit=2")
    pid = worker.process.pid
    try:
        produce(worker.settings, broker.bootstrap, events[: N // 2])
        for _ in range(3):  # while the faults are being retried (each check reads the topics: seconds)
            assert asyncio.run(offsets_without_outcome(worker.settings, broker.bootstrap)) == []
        produce(worker.settings, broker.bootstrap, events[N // 2:])
        asyncio.run(wait_drained(worker.settings, broker.bootstrap, "conversations"))
        asyncio.run(wait_drained(worker.settings, broker.bootstrap, "verdicts"))
        assert asyncio.run(offsets_without_outcome(worker.settings, broker.bootstrap)) == []
        log = worker.log()
        assert worker.process.poll() is None and worker.process.pid == pid, "the worker restarted"
    finally:
        worker.stop()

    assert "FAULT INJECTION IS ON" in log
    for point in ("deliver", "pool", "audit"):
        assert f"injected {point} fault" in log, point
    verdicts = {v["source_event_id"]: v for v in read_all(worker.settings, broker.bootstrap, "verdicts")}
    assert set(verdicts) == {e["event_id"] for e in events}
    assert not [v for v in verdicts.values() if v["error"] and "unavailable" in v["error"]]  # retried, not failed over
    with psycopg.connect(audit_url) as db:
        stored = {r[0] for r in db.execute("SELECT verdict_id FROM guard_verdicts").fetchall()}
    refused = {v["verdict_id"] for v in verdicts.values() if v["tenant"] == REFUSED}
    assert stored == {v["verdict_id"] for v in verdicts.values()} - refused
    letters = read_all(worker.settings, broker.bootstrap, "dlq", lambda d: d["error_code"] == "audit_rejected")
    assert {json.loads(d["raw_value"])["verdict_id"] for d in letters} == refused
    assert all("no_refused" in d["error"] and d["topic"] == topic_name(worker.settings, "verdicts") for d in letters)

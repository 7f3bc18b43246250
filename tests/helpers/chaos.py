"""Steady mixed load and the checks after faults (the chaos and broker-fault tests): conversation
events, reply streams and malformed records produced at a steady rate; afterwards every valid event
and chunk has a verdict, every malformed record is a dead letter with its code, every stream has
exactly one final verdict and the audit trail holds exactly the distinct verdict ids."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

import psutil
import psycopg
from aiokafka import AIOKafkaProducer

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import records, topic_name

from tests.helpers.kafka_helpers import read_all
from tests.helpers.pipeline import committed_offsets
from tests.helpers.stream_helpers import build_streams, interleaved_chunks

GOOD = {"tenant": "acme", "messages": [{"role": "user", "content": "hello"}]}
MALFORMED = {  # key: (value, topic role, expected error code)
    "bad-notjson-1": (b"{this is not json", "conversations", "not_json"),
    "bad-notjson-2": (b"", "chunks", "not_json"),
    "bad-utf8-1": (b"\xff\xfe\xfd not utf-8", "conversations", "not_utf8"),
    "bad-utf8-2": (b'{"event_id": "\xc3\x28"}', "chunks", "not_utf8"),
    "bad-nested-1": (b"[" * 100_000 + b"]" * 100_000, "conversations", "not_json"),
    "bad-nested-2": (b'{"a":' * 40_000 + b"1" + b"}" * 40_000, "chunks", "not_json"),
    "bad-types-1": (json.dumps({**GOOD, "event_id": 7, "conversation_id": "x"}).encode(), "conversations", "invalid_schema"),
    "bad-types-2": (json.dumps({"event_id": "x", "conversation_id": "x", "stream_id": "s", "tenant": "acme", "seq": "zero",
                                "token_ids": [1]}).encode(), "chunks", "invalid_schema"),
    "bad-unknown-1": (json.dumps({**GOOD, "event_id": "x", "conversation_id": "x", "priority": 9}).encode(),
                      "conversations", "invalid_schema"),
    "bad-unknown-2": (json.dumps({**GOOD, "event_id": "x", "conversation_id": "x", "messages": [
        {"role": "user", "content": "hi", "name": "bob"}]}).encode(), "conversations", "invalid_schema"),
    "bad-oversize-1": (json.dumps({**GOOD, "event_id": "x", "conversation_id": "x", "messages": [
        {"role": "user", "content": "a" * 270_000}]}).encode(), "conversations", "oversize"),
    "bad-oversize-2": (json.dumps({"event_id": "x", "conversation_id": "x", "stream_id": "s", "tenant": "acme", "seq": 1,
                                   "text_delta": "b" * 40_000}).encode(), "chunks", "oversize"),
    "bad-control-1": (json.dumps({**GOOD, "event_id": "x", "conversation_id": "nul\u0000id"}).encode(), "conversations",
                      "invalid_schema"),
    "bad-control-2": (json.dumps({**GOOD, "event_id": "line\nbreak", "conversation_id": "x"}).encode(), "conversations",
                      "invalid_schema"),
    "bad-control-3": (json.dumps({"event_id": "x", "conversation_id": "x", "stream_id": "s\u0007", "tenant": "acme",
                                  "seq": 0, "prompt": "p", "token_ids": [1]}).encode(), "chunks", "invalid_schema"),
}


def workload(tok, prefix: str, events: int, streams_count: int) -> list[tuple[str, bytes, bytes]]:
    """(topic role, key, value) in production order: the three kinds interleaved."""
    corpus = load_corpus()
    conversations = [("conversations", f"{prefix}-c{i // 2}", json.dumps({
        "event_id": f"{prefix}-{i}", "conversation_id": f"{prefix}-c{i // 2}", "tenant": ["acme", "globex"][i % 2],
        "moderate": corpus[i % len(corpus)].kind, "messages": corpus[i % len(corpus)].messages}).encode())
        for i in range(events)]
    streams = [{**s, "id": f"{prefix}-{s['id']}"} for s in build_streams(tok)[:streams_count]]
    chunks = [("chunks", c["conversation_id"], json.dumps(c).encode()) for c in interleaved_chunks(streams)]
    bad = [(role, key, value) for key, (value, role, _) in MALFORMED.items()]
    ordered, lists = [], [conversations, chunks, bad]
    while any(lists):
        for items in lists:
            take = max(1, len(items) // 20)
            ordered += [(role, key.encode(), value) for role, key, value in items[:take]]
            del items[:take]
    return ordered


def produce_steadily(settings, bootstrap: str, items: list, seconds: float, done: threading.Event) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2_000_000)
        await producer.start()
        try:
            began = time.monotonic()
            for i, (role, key, value) in enumerate(items):
                await asyncio.sleep(max(0.0, began + i * seconds / len(items) - time.monotonic()))
                await producer.send_and_wait(topic_name(settings, role), value, key=key)
        finally:
            await producer.stop()

    try:
        asyncio.run(run())
    finally:
        done.set()


def app_processes(app: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get("GUARDSTREAM_APP_ID") == app:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def diagnose(settings, bootstrap: str, missing: set[str]) -> str:
    """Where the events without a verdict sit, what is committed, and whether a slower read finds them."""
    async def run() -> str:
        where = {}
        for role in ("conversations", "chunks"):
            async for m in records(settings, bootstrap, role, idle_timeout_s=3):
                try:
                    event_id = json.loads(m.value)["event_id"]
                except (ValueError, KeyError, TypeError):
                    continue
                if event_id in missing:
                    where[event_id] = (role, m.partition, m.offset)
        committed = {role: await committed_offsets(bootstrap, settings.kafka.group_id, topic_name(settings, role),
                                                   list(range(settings.kafka.topic_partitions)))
                     for role in ("conversations", "chunks")}
        again = set()
        async for m in records(settings, bootstrap, "verdicts", idle_timeout_s=10):
            again.add(json.loads(m.value)["source_event_id"])
        return (f"{len(missing)} valid events without a verdict; first: {sorted(where.items())[:8]}; committed: {committed}; "
                f"found by a slower read: {len(missing & again)}")

    return asyncio.run(run())


@dataclass
class Outcomes:
    valid: int
    verdict_records: int
    distinct_verdicts: int
    audit_rows: int


def assert_every_outcome(settings, bootstrap: str, items: list, pg_url: str, prefix: str, streams: int,
                         events: int) -> Outcomes:
    """Every valid event and chunk has a verdict, every malformed record its dead letter, every stream
    one final verdict, and the audit rows are exactly the distinct verdict ids."""
    verdicts = read_all(settings, bootstrap, "verdicts")
    answered = {v["source_event_id"] for v in verdicts}
    valid = {json.loads(v)["event_id"] for role, key, v in items if not key.startswith(b"bad-")}
    assert len(valid) >= events + streams * 3
    missing = valid - answered
    assert not missing, diagnose(settings, bootstrap, missing)

    letters = {d["key"]: d for d in read_all(settings, bootstrap, "dlq")}
    assert {k: letters.get(k, {}).get("error_code") for k in MALFORMED} == {k: code for k, (_, _, code) in MALFORMED.items()}

    finals = defaultdict(set)
    for v in verdicts:
        if v.get("stream") and v["stream"]["final"]:
            finals[v["stream"]["stream_id"]].add(v["verdict_id"])
    assert len(finals) == streams and all(len(ids) == 1 for ids in finals.values()), finals

    with psycopg.connect(pg_url) as db:
        rows = db.execute("SELECT verdict_id FROM guard_verdicts WHERE conversation_id LIKE %s OR conversation_id LIKE %s",
                          (f"{prefix}-%", f"conv-{prefix}-%")).fetchall()
    assert sorted(r[0] for r in rows) == sorted({v["verdict_id"] for v in verdicts})
    return Outcomes(len(valid), len(verdicts), len({v["verdict_id"] for v in verdicts}), len(rows))

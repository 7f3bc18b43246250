"""Plain aiokafka producing and reading, for the CLI, the demo and the tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console

from guardstream.schemas import CanaryRecord, PolicyRecord
from guardstream.wire.policy_feed import PoliciesUnavailable, PolicyFeed, check_policies_topic, policy_key
from guardstream.wire.errors import authorized
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics, topics_for
from guardstream.wire.policy import PoliciesInForce, TenantPolicy


def topic_name(settings: Settings, role: str) -> str:
    return getattr(topics_for(settings.kafka), role).name


def _key_of(line: str) -> bytes | None:
    try:
        key = json.loads(line).get("conversation_id")
    except (ValueError, AttributeError):
        return None
    return str(key).encode() if key is not None else None


async def produce_lines(settings: Settings, bootstrap: str, role: str, lines: list[str]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings.kafka.client_options())
    await producer.start()
    try:
        topic = topic_name(settings, role)
        with authorized("Write", f"topic {topic}"):
            sent = [await producer.send(topic, line.encode(), key=_key_of(line)) for line in lines]
            await asyncio.gather(*sent)
        return len(sent)
    finally:
        await producer.stop()


async def records(settings: Settings, bootstrap: str, role: str, idle_timeout_s: float | None = None,
                  until: Callable[[], bool] = lambda: False) -> AsyncIterator:
    """Yield a topic's records (by role in the topic registry) from the beginning, until `until()`
    or no record for idle_timeout_s. The reader joins no consumer group: it reads every partition,
    and starts at once instead of waiting for a group's first join (6 s on the embedded broker)."""
    consumer = AIOKafkaConsumer(topic_name(settings, role), bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False, **settings.kafka.client_options())
    await consumer.start()
    try:
        last = time.monotonic()
        while not until():
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for message in messages:
                    last = time.monotonic()
                    yield message
            if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                return
    finally:
        await consumer.stop()


class PolicyConflict(RuntimeError):
    """Another `policy set` took the same version first: this one is not in force."""


async def set_policy(settings: Settings, bootstrap: str, tenant: str, document: dict, set_by: str) -> int:
    """Put a tenant's policy (or `default`'s) on the policies topic as its next version; returns
    the version. Tenant, author and document are checked before anything is read or sent (a
    `ValueError` says what is wrong); a valid document, whose every field is bounded, is far below
    the size readers accept (`POLICY_RECORD_BYTES`).

    A compare-and-set: the record is read back with everything before it, as every reader reads
    it. Another change that took the same version first means this one is refused by every reader:
    its record is tombstoned and `PolicyConflict` raised. Once it is in force, the versions it
    supersedes and the records readers refused are tombstoned, so the log cleaner removes them."""
    TenantPolicy.model_validate(document)
    record = PolicyRecord(tenant=tenant, version=1, set_by=set_by, policy=document)
    await ensure_topics(settings.kafka, bootstrap, ("policies",))  # before any worker has: the topic starts with this record
    await check_policies_topic(settings.kafka, bootstrap)
    feed = PolicyFeed(settings.kafka, bootstrap)  # the topic alone: versions count from its records
    await feed.catch_up()
    record = record.model_copy(update={"version": feed.policies.set_versions().get(tenant, 0) + 1})
    key = policy_key(tenant, record.version, uuid.uuid4().hex[:16])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **settings.kafka.client_options())
    await producer.start()
    try:
        with authorized("Write", f"topic {feed.partition.topic} (only the policy admin writes it)"):
            sent = await producer.send_and_wait(feed.partition.topic, record.model_dump_json().encode(), key=key.encode())
        await feed.catch_up()  # to at least its own record
        if feed.position <= sent.offset:
            raise PoliciesUnavailable(f"the record sent at offset {sent.offset} was not read back")
        if feed.in_force.get(tenant, ("",))[0] != key:
            await producer.send_and_wait(feed.partition.topic, None, key=key.encode())
            raise PolicyConflict(f"another change to {tenant}'s policy took version {record.version} first (now in "
                                 f"force: {feed.policies.version(tenant)}); yours was not applied: look at `guardstream "
                                 f"policy show {tenant}` and set it again")
        await asyncio.gather(*[await producer.send(feed.partition.topic, None, key=stale.encode())
                               for stale in sorted(feed.stale)])
    finally:
        await producer.stop()
    return record.version


async def policy_history(settings: Settings, bootstrap: str) -> tuple[PoliciesInForce, list[tuple[int, str, str]]]:
    """The policy in force (the settings' document with the topic over it) and, per record of the
    topic in order: its offset, its tenant (key) and what became of it."""
    feed = PolicyFeed(settings.kafka, bootstrap, settings.policy)
    history = []
    async for message in records(settings, bootstrap, "policies", idle_timeout_s=1.5):
        lifted = message.value is None and (message.key or b"").decode("utf-8", "replace") in {
            key for key, _ in feed.in_force.values()}
        letter = feed.apply(message)
        key = (message.key or b"").decode("utf-8", "replace")
        if letter is not None:
            history.append((message.offset, key, f"refused: {letter.error}"))
        elif message.value is None:
            history.append((message.offset, key, "removed: the starting document decides" if lifted
                            else "tombstone of a superseded or refused record"))
        else:
            record = PolicyRecord.model_validate_json(message.value)
            history.append((message.offset, key, f"version {record.version} set by {record.set_by} at "
                                                  f"{record.set_at:%Y-%m-%d %H:%M:%S}Z: {json.dumps(record.policy)}"))
    return feed.policies, history


async def canary_records(settings: Settings, bootstrap: str) -> tuple[list[CanaryRecord], int]:
    """Every record of the canary topic, and how many could not be read as one."""
    found, unreadable = [], 0
    async for message in records(settings, bootstrap, "canary", idle_timeout_s=1.5):
        try:
            found.append(CanaryRecord.model_validate_json(message.value))
        except ValueError:
            unreadable += 1
    return found, unreadable


SUMMARY = {
    "verdicts": lambda v: f"{v['tenant']:<10} {v['moderate']:<8} {v['risk_level']:<13} {v['action']:<6} "
                          f"{', '.join(v['categories']) or '-'}",
    "actions": lambda v: f"{v['tenant']:<10} {v['action']:<6} {v['reason']}",
    "analytics": lambda v: f"{v['window_start']} {v['tenant']:<10} {v['risk_level']:<13} {v['category']:<28} {v['count']}",
    "dlq": lambda v: f"{v['topic']}[{v['partition']}]@{v['offset']} {v['error_code']}: {v['error']}",
}


async def tail_topic(settings: Settings, bootstrap: str, role: str, limit: int | None, as_json: bool) -> None:
    console = Console(soft_wrap=True)  # one record per line, also when piped
    seen = 0
    async for message in records(settings, bootstrap, role):
        if limit is not None and seen >= limit:
            break
        seen += 1
        text = message.value.decode("utf-8", "replace")
        if as_json or role not in SUMMARY:
            console.print(text, markup=False, highlight=False)
            continue
        try:
            console.print(SUMMARY[role](json.loads(text)), markup=False, highlight=False)
        except (ValueError, KeyError):
            console.print(f"[red]unreadable record at offset {message.offset}[/]: {text[:200]}")

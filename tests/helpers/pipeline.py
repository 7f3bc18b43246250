"""Running the real pipeline in integration tests: worker processes, the shared policy, and
waiting until a consumer group has committed a topic."""

from __future__ import annotations

import ast
import asyncio
import os
import re
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.errors import for_code
from aiokafka.protocol.commit import OffsetFetchRequest

from guardstream.dev.worker_process import WorkerProcess, WorkerStartError
from guardstream.kafka_io import topic_name
from guardstream.topology.settings import Settings

PG_ADMIN_URL = os.environ.get("GUARDSTREAM_TEST_PG", "postgresql://postgres:postgres@127.0.0.1:5432/test")
LOOSE = {"mode": "loose", "fail_mode": "open", "category_actions": {"PII": "review"}}
STRICT = {"mode": "strict", "fail_mode": "closed"}
# gw-*: the gateway client's tests, whose verdicts must not enter test_pipeline's per-tenant counts
# Tenants the policy names keep their names in metric labels (test_pipeline counts them); others are `other`.
POLICY = {"default": STRICT, "tenants": {"globex": LOOSE, "gw-loose": LOOSE, "acme": STRICT, "initech": STRICT,
                                         "gw-strict": STRICT}}



class RunningWorker(WorkerProcess):
    def actor_pids(self, kind: str) -> list[int]:
        """Process ids of the worker's GenGuard or StreamGuard actors, as they reported ready."""
        return [ast.literal_eval(m)["pid"] for m in re.findall(kind + r" ready: (\{.*\})", self.log())]

    def trouble(self, lines: int = 40) -> str:
        """The log's last warnings and errors, less the client's reconnect chatter: what a failing
        test prints so that CI's output says what the worker was doing."""
        noise = ("Unable connect to node", "Failed fetch messages", "NodeNotReadyError", "dead letter from")
        found = [line[:300] for line in self.log().splitlines()
                 if (" WARNING " in line or " ERROR " in line or "Traceback" in line) and not any(n in line for n in noise)]
        return "\n".join(found[-lines:])


def start_worker(bootstrap: str, gen_model: str, log_path: Path, **env_settings: str) -> RunningWorker:
    worker = RunningWorker(bootstrap, log_path, "--gen-model", gen_model, kafka_rebalance_timeout_s=6,
                           kafka_session_timeout_s=6, **env_settings)
    try:
        return worker.wait_ready()
    except WorkerStartError as exc:
        pytest.fail(str(exc))


async def describe_topic(bootstrap: str, topic: str) -> dict:
    """The broker's description of a topic: its partitions, their leaders and replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return (await admin.describe_topics([topic]))[0]
    finally:
        await admin.close()


async def last_offsets(settings: Settings, bootstrap: str, role: str) -> dict[int, int]:
    """Next offset after the last record of each partition (ListOffsets: Kafka's end offsets)."""
    topic = topic_name(settings, role)
    described = await describe_topic(bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(partitions)).items()}
    finally:
        await consumer.stop()


async def wait_drained(settings: Settings, bootstrap: str, role: str, timeout_s: float = 120) -> None:
    """Wait until the worker's consumer groups have committed every record of a topic (all agents
    acked; for verdicts, the audit sink's own group too)."""
    groups = [settings.kafka.group_id] + ([settings.audit_group] if role == "verdicts" and "audit" in settings.agents else [])
    for group in groups:
        await wait_committed(settings, bootstrap, role, group, timeout_s)


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: list[int],
                            timeout_s: float = 30) -> dict[int, int]:
    """A group's committed offset of each partition (-1: none). aiokafka's admin and consumer read a
    group-level error (coordinator moving or loading, as after a broker's fault) as "nothing
    committed"; here it is retried until the coordinator answers."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                node = await client.coordinator_lookup(CoordinationType.GROUP, group)
                response = await client.send(node, OffsetFetchRequest(group, [(topic, partitions)]))
                errors = [getattr(response, "error_code", 0)] + [p[3] for _, ps in response.topics for p in ps]
                if not any(errors):
                    offsets = {p[0]: p[1] for _, ps in response.topics for p in ps}
                    return {p: offsets.get(p, -1) for p in partitions}  # Tansu leaves out what was never committed
                failure = ", ".join(sorted({for_code(code).__name__ for code in errors if code}))
            except Exception as exc:  # noqa: BLE001 - a node down or a coordinator moving: ask again
                failure = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(f"{group}'s committed offsets of {topic} unreadable for {timeout_s:.0f}s: {failure}")
            await asyncio.sleep(0.5)
    finally:
        await client.close()


async def wait_committed(settings: Settings, bootstrap: str, role: str, group: str, timeout_s: float = 120) -> None:
    """Wait until one consumer group has committed every record of a topic."""
    topic = topic_name(settings, role)
    ends = await last_offsets(settings, bootstrap, role)
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(bootstrap, group, topic, list(ends), timeout_s)
        behind = {p: end - max(0, committed[p]) for p, end in ends.items()}
        if all(lag <= 0 for lag in behind.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{topic} not drained by group {group} within {timeout_s}s: records still "
                                 f"uncommitted per partition {behind} (ends {ends}, committed {committed})")
        await asyncio.sleep(0.5)

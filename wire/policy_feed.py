"""The policies topic, read by every worker, gateway client and `serve`.

One partition, compacted. Each record is one version of one tenant's policy (`default`: tenants
no entry names), under a key of its own, `<tenant>/<version>/<writer's nonce>` (`policy_key`).
Each reader reads the topic to the end offset it found at start before it starts (a restarted
process starts with the latest versions) and then follows it, so a change is in force everywhere
within a fetch. A record that is not a valid `PolicyRecord` holding a valid tenant policy under
its own key, or whose version is not newer than the one in force, is refused: logged, counted and
handed to `reject` (a worker dead-letters it), and its tenant keeps the policy it had; a dead
letter that cannot be sent within `REJECT_WAIT_S` is logged and left (the record stays on the
topic, in `guardstream policy history`), so no refused record holds back the changes after it.

`stale_for()` says how long the reader has not known itself at the topic's end: a worker's and
`serve`'s readiness fails past `max_stale_s` (GUARDSTREAM_POLICY_MAX_STALE_S), the bound on how stale a policy in
force may be without anyone being told.

Why a key per version: the log cleaner keeps the last record of each key, not the last valid
one. Under one key per tenant, a refused or older record written after the one in force would,
once the cleaner ran, be all that a restarted process reads. Under a key per version no record
shares a key with another, so the cleaner removes only what was tombstoned, and keeps the order
of the rest: a restarted process refuses the same records and puts the same versions in force.
`guardstream policy set` tombstones the versions it supersedes and the records readers refused,
so catching up reads about one record per tenant. A tombstone of the key in force lifts the
tenant's entry (the starting document decides for it again); any other tombstone changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAuthorizationFailedError
from pydantic import ValidationError

from guardstream.schemas import DeadLetter, PolicyRecord
from guardstream.schemas.intake import RawRecord, dead_letter, decode, describe_errors
from guardstream.wire import metrics
from guardstream.wire.errors import NotAuthorized, authorized, describe
from guardstream.wire.reconnecting import ReconnectingReader, started, stop_consumer
from guardstream.wire.settings import KafkaSettings
from guardstream.wire.topics import topics_for
from guardstream.wire.policy import PoliciesInForce, Policy, TenantPolicy

log = logging.getLogger(__name__)
POLICY_RECORD_BYTES = 64 * 1024  # a larger record is refused (no valid document comes near it)
POLICY_KEY_BYTES = 160  # tenant (64) / version (10 digits) / nonce (64)
RETRY_AFTER_S = 5
CATCH_UP_S = 60
REJECT_WAIT_S = 10


Reject = Callable[[DeadLetter], Awaitable[None]]


class PoliciesUnavailable(RuntimeError):
    """The policies topic could not be read at start."""


def policy_key(tenant: str, version: int, nonce: str) -> str:
    """The key of one version of a tenant's policy: no two records share one."""
    return f"{tenant}/{version}/{nonce}"


def key_matches(key: str, record: PolicyRecord) -> bool:
    parts = key.split("/")
    return len(parts) == 3 and parts[0] == record.tenant and parts[1] == str(record.version) and 0 < len(parts[2]) <= 64


class PolicyFeed(ReconnectingReader):
    label = "policies reader"
    retry_after_s = RETRY_AFTER_S

    def __init__(self, kafka: KafkaSettings, bootstrap: str, document: Policy | None = None, max_stale_s: float = 30):
        self.kafka, self.bootstrap, self.max_stale_s = kafka, bootstrap, max_stale_s
        self.policies = PoliciesInForce(document)  # this feed's alone to change; everyone else reads it
        self.partition = TopicPartition(topics_for(kafka).policies.name, 0)
        self.position = 0  # the next offset to read
        self.in_force: dict[str, tuple[str, bytes]] = {}  # tenant → the key and value of its record in force
        self.stale: set[str] = set()  # keys of records read, neither in force nor tombstoned: `policy set` clears them
        self.current_at: float | None = None  # time.monotonic() when the reader last was at the topic's end
        self.reject: Reject | None = None  # where `follow` sends the dead letters of records it refuses

    def stale_for(self) -> float:
        """Seconds since the reader last knew it was at the topic's end (forever, before it was)."""
        return float("inf") if self.current_at is None else time.monotonic() - self.current_at

    def readiness(self) -> tuple[bool, str]:
        behind, bound = self.stale_for(), self.max_stale_s
        if behind > bound:
            return False, (f"the policies topic has not been read to its end for {behind:.0f}s (more than "
                           f"GUARDSTREAM_POLICY_MAX_STALE_S={bound:g}): the policies in force may be stale")
        return True, "policies current"

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=min(self.kafka.fetch_max_wait_ms, 500),
                                **self.kafka.client_options())

    async def catch_up(self, timeout_s: float = CATCH_UP_S) -> int:
        """Read the topic to its end; returns how many records were read. Refused records are only
        logged and counted here: they were dead-lettered when they arrived. A process that cannot
        read it in `timeout_s` does not start: it would decide with policies that may be stale."""
        deadline = time.monotonic() + timeout_s
        consumer = await started(self._consumer(), self.label)
        try:
            consumer.assign([self.partition])
            consumer.seek(self.partition, self.position)
            end = (await consumer.end_offsets([self.partition]))[self.partition]
            read = 0
            while self.position < end:  # the end found at start: later records are `follow`'s, so a
                with authorized("Read", f"topic {self.partition.topic}"):
                    batch = (await consumer.getmany(self.partition, timeout_ms=1000)).get(self.partition, [])
                for message in batch:  # steady trickle of changes cannot hold a start back
                    self.apply(message)
                    self.position = message.offset + 1
                read += len(batch)
                if time.monotonic() > deadline:
                    raise PoliciesUnavailable(f"the policies topic {self.partition.topic} could not be read to its end "
                                              f"(offset {end}, at {self.position}) within {timeout_s:.0f}s: is the "
                                              f"broker reachable, and may this process read that topic?")
            self.current_at = time.monotonic()
            return read
        finally:
            await stop_consumer(consumer, self.label)

    async def follow(self, reject: Reject | None = None) -> None:
        """Follow the topic from where `catch_up` ended, until cancelled; a broker error is logged and
        the reading resumed from the same offset (a policy reader that stopped would freeze every
        tenant's policy)."""
        self.reject = reject
        await self.keep_reading()

    async def open(self) -> AIOKafkaConsumer:
        consumer = await started(self._consumer(), self.label)
        consumer.assign([self.partition])
        consumer.seek(self.partition, self.position)
        return consumer

    async def read_with(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(self.partition, timeout_ms=1000)
            for message in batch.get(self.partition, []):
                letter = self.apply(message)
                if letter is not None and self.reject is not None:
                    await self._reject(self.reject, letter)
                self.position = message.offset + 1
            highwater = consumer.highwater(self.partition)
            if highwater is not None and self.position >= highwater:
                self.current_at = time.monotonic()

    @staticmethod
    async def _reject(reject: Reject, letter: DeadLetter) -> None:
        """Dead-letter a refused record, waiting at most REJECT_WAIT_S: a DLQ that refuses it must
        not hold back every later change (the record itself stays on the policies topic)."""
        try:
            await asyncio.wait_for(reject(letter), REJECT_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - logged and left: the next records are read on
            log.error("the dead letter of the refused policies record at offset %d could not be sent (%s); it stays "
                      "on the policies topic (`guardstream policy history`) and later changes are read on",
                      letter.offset, describe(exc))

    def apply(self, message) -> DeadLetter | None:
        """Put one record of the topic in force; a refused one comes back as its dead letter."""
        record = RawRecord.of(message)
        key = (message.key or b"").decode("utf-8", "replace")
        tenant = key.split("/", 1)[0]
        if message.value is None:
            self.stale.discard(key)
            if self.in_force.get(tenant, ("",))[0] == key:
                del self.in_force[tenant]
                self.policies.set_tenant(tenant, 0, None)
                metrics.POLICY_VERSION.remove(tenant)
                log.info("policy of %s: entry removed, the starting document decides", tenant)
            return None
        if self.in_force.get(tenant) == (key, message.value):
            return None  # the record in force, again (a producer's retry): nothing changes
        decoded, problem = decode(record, PolicyRecord, POLICY_RECORD_BYTES), None
        if isinstance(decoded, PolicyRecord):
            in_force = self.policies.set_versions().get(decoded.tenant, 0)
            try:
                policy = TenantPolicy.model_validate(decoded.policy)
            except ValidationError as exc:
                problem = describe_errors(exc)
            if len(key) > POLICY_KEY_BYTES or not key_matches(key, decoded):
                problem = (f"the record's key {key[:POLICY_KEY_BYTES]!r} is not "
                           f"{policy_key(decoded.tenant, decoded.version, '<nonce>')!r}")
            elif problem is None and decoded.version <= in_force:
                problem = f"version {decoded.version} is not newer than version {in_force} in force"
            if problem is None:
                if decoded.tenant in self.in_force:
                    self.stale.add(self.in_force[decoded.tenant][0])  # superseded
                self.in_force[decoded.tenant] = (key, message.value)
                self.policies.set_tenant(decoded.tenant, decoded.version, policy)
                metrics.POLICY_VERSION.labels(decoded.tenant).set(decoded.version)
                log.info("policy of %s: version %d (set by %s) is in force", decoded.tenant, decoded.version,
                         decoded.set_by)
                return None
            decoded = dead_letter(record, "invalid_schema", f"policy refused, the previous one stays in force: {problem}")
        if message.key is not None:
            self.stale.add(key)
        metrics.POLICY_REJECTED.inc()
        log.error("policies record at offset %d refused: %s", message.offset, decoded.error)
        return decoded


async def check_policies_topic(kafka: KafkaSettings, bootstrap: str) -> None:
    """The policies topic has one partition (one order for every reader) and is compacted (it keeps
    each version in force however old); anything else stops the start with what to change."""
    topic = topics_for(kafka).policies.name
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka.client_options())
    await admin.start()
    try:
        for _ in range(50):  # a topic just created may not be described everywhere yet
            described = (await admin.describe_topics([topic]))[0]
            if described.get("error_code") == TopicAuthorizationFailedError.errno:
                raise NotAuthorized("Describe", f"topic {topic}")
            if described.get("partitions"):
                break
            await asyncio.sleep(0.2)
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    partitions = len(described.get("partitions") or [])
    if any(error_code == TopicAuthorizationFailedError.errno for response in configs
           for error_code, *_ in response.resources):
        raise NotAuthorized("DescribeConfigs", f"topic {topic}")
    values = {entry[0]: entry[1] for response in configs for *_, entries in response.resources for entry in entries}
    cleanup = values.get("cleanup.policy", "")
    if partitions != 1 or "compact" not in cleanup.split(","):
        raise PoliciesUnavailable(
            f"the policies topic {topic} has {partitions} partition(s) and cleanup.policy={cleanup or 'unknown'}; it "
            f"needs exactly 1 partition and cleanup.policy=compact. Recreate it so (kafka-topics --create --topic "
            f"{topic} --partitions 1 --config cleanup.policy=compact), then `guardstream policy set` each tenant again")

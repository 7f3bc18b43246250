"""The policies topic, read by every worker, gateway client and `serve`.

One partition, compacted, keyed by tenant (`default`: tenants no entry names). Each reader reads
it whole before it starts (a restarted process starts with the latest versions) and then
follows it, so a change is in force everywhere within a fetch. A record that is not a valid
`PolicyRecord` holding a valid tenant policy, or whose version is not newer than the one in
force, is refused: logged, counted and handed to `reject` (a worker dead-letters it), and its
tenant keeps the policy it had. A tombstone lifts the tenant's entry (the starting document
decides for it again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from guardstream.schemas import DeadLetter, PolicyRecord
from guardstream.schemas.intake import RawRecord, dead_letter, decode, describe_errors
from guardstream.topology import metrics
from guardstream.topology.outcomes import describe
from guardstream.topology.settings import Settings
from guardstream.topology.topics import topics_for
from guardstream.workers.moderation.policy import TenantPolicy

log = logging.getLogger(__name__)
POLICY_RECORD_BYTES = 64 * 1024  # a larger record is refused (`policy set` refuses to send one)
RETRY_AFTER_S = 5
CATCH_UP_S = 60


Reject = Callable[[DeadLetter], Awaitable[None]]


class PoliciesUnavailable(RuntimeError):
    """The policies topic could not be read at start."""


class PolicyFeed:
    def __init__(self, settings: Settings, bootstrap: str):
        self.settings, self.bootstrap, self.policy = settings, bootstrap, settings.policy
        self.partition = TopicPartition(topics_for(settings).policies.name, 0)
        self.position = 0  # the next offset to read

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=min(self.settings.kafka_fetch_max_wait_ms, 500),
                                **self.settings.kafka_client_options())

    async def catch_up(self, timeout_s: float = CATCH_UP_S) -> int:
        """Read the topic to its end; returns how many records were read. Refused records are only
        logged and counted here: they were dead-lettered when they arrived. A process that cannot
        read it in `timeout_s` does not start: it would decide with policies that may be stale."""
        deadline = time.monotonic() + timeout_s
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.assign([self.partition])
            consumer.seek(self.partition, self.position)
            end = (await consumer.end_offsets([self.partition]))[self.partition]
            read = 0
            while True:
                batch = (await consumer.getmany(self.partition, timeout_ms=1000)).get(self.partition, [])
                for message in batch:
                    self.apply(message)
                    self.position = message.offset + 1
                read += len(batch)
                if not batch and self.position >= end:  # past the end offset, and a fetch found nothing more
                    return read
                if time.monotonic() > deadline:
                    raise PoliciesUnavailable(f"the policies topic {self.partition.topic} could not be read to its end "
                                              f"(offset {end}, at {self.position}) within {timeout_s:.0f}s: is the "
                                              f"broker reachable, and may this process read that topic?")
        finally:
            await consumer.stop()

    async def follow(self, reject: Reject | None = None) -> None:
        """Follow the topic from where `catch_up` ended, until cancelled; a broker error is logged and
        the reading resumed from the same offset."""
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                consumer.assign([self.partition])
                consumer.seek(self.partition, self.position)
                while True:
                    batch = await consumer.getmany(self.partition, timeout_ms=1000)
                    for message in batch.get(self.partition, []):
                        letter = self.apply(message)
                        if letter is not None and reject is not None:
                            await reject(letter)  # one that could not be sent: the record is read again
                        self.position = message.offset + 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a policy reader that stops would freeze every tenant's policy
                log.warning("reading the policies topic failed (%s); trying again in %ds", describe(exc), RETRY_AFTER_S)
                await asyncio.sleep(RETRY_AFTER_S)
            finally:
                await asyncio.shield(consumer.stop())

    def apply(self, message) -> DeadLetter | None:
        """Put one record of the topic in force; a refused one comes back as its dead letter."""
        record = RawRecord(message.topic, message.partition, message.offset, message.key, message.value)
        key = (message.key or b"").decode("utf-8", "replace")
        if message.value is None:
            if key in self.policy.set_versions():
                self.policy.set_tenant(key, 0, None)
                metrics.POLICY_VERSION.remove(key)
                log.info("policy of %s: entry removed, the starting document decides", key)
            return None
        decoded, problem = decode(record, PolicyRecord, POLICY_RECORD_BYTES), None
        if isinstance(decoded, PolicyRecord):
            in_force = self.policy.set_versions().get(decoded.tenant, 0)
            try:
                policy = TenantPolicy.model_validate(decoded.policy)
            except ValidationError as exc:
                problem = describe_errors(exc)
            if key != decoded.tenant:
                problem = f"the record's key {key!r} is not its tenant {decoded.tenant!r}"
            elif problem is None and decoded.version <= in_force:
                problem = f"version {decoded.version} is not newer than version {in_force} in force"
            if problem is None:
                self.policy.set_tenant(decoded.tenant, decoded.version, policy)
                metrics.POLICY_VERSION.labels(decoded.tenant).set(decoded.version)
                log.info("policy of %s: version %d (set by %s) is in force", decoded.tenant, decoded.version,
                         decoded.set_by)
                return None
            decoded = dead_letter(record, "invalid_schema", f"policy refused, the previous one stays in force: {problem}")
        metrics.POLICY_REJECTED.inc()
        log.error("policies record at offset %d refused: %s", message.offset, decoded.error)
        return decoded

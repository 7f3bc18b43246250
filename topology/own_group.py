"""A reader in a consumer group of its own, beside the Faust agents: the audit and review sinks and the canary.

Agents share the worker's one consumer, so an agent that waits (a database outage retried while
its offsets are held, a slow canary pool) fills its buffer and then holds back every other agent.
A reader in its own group falls behind alone. It is a service of the app that makes its consumer,
runs `step` until stopped, and after any failure replaces the consumer (`reconnecting.py`),
forgetting what it held in memory: what it had not committed is read again. It never raises, since
an exception in a service would stop the whole app.
"""

from __future__ import annotations

import logging

import mode
from aiokafka import AIOKafkaConsumer

from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes
from guardstream.topology.settings import Settings
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.wire.errors import describe
from guardstream.wire.kafka_internals import group_errors_raised
from guardstream.wire.reconnecting import ReconnectingReader, started, stop_consumer

log = logging.getLogger(__name__)
RECONNECT_AFTER_S = 1.0


def group_consumer(settings: Settings, bootstrap: str, group: str, *topics: str, **options) -> AIOKafkaConsumer:
    """A consumer of `group` that commits only when told, with the workers' timeouts and security."""
    return group_errors_raised(AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        session_timeout_ms=int(settings.kafka.session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.kafka.rebalance_timeout_s * 1000),
        heartbeat_interval_ms=1000, **settings.kafka.client_options(), **options))


def bound(reader: type[OwnGroupReader], **attributes) -> type[OwnGroupReader]:
    """`reader` with what it reads with (the wiring, its store) as class attributes: Faust makes
    an app's services itself, from their classes, when the app starts."""
    return type(reader.__name__, (reader,), attributes)


class OwnGroupReader(mode.Service, ReconnectingReader):
    label = "reader"  # in its log lines
    retry_after_s = RECONNECT_AFTER_S

    def new_consumer(self) -> AIOKafkaConsumer:
        raise NotImplementedError

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        """One batch read from `consumer` and settled (committed or left to be read again)."""
        raise NotImplementedError

    def forget(self) -> None:
        """What the reader holds in memory, dropped with its consumer."""

    async def ready(self) -> bool:
        """Whether it may join its group now (the canary waits for its models); asked again each second."""
        return True

    async def open(self) -> AIOKafkaConsumer | None:
        return await started(self.new_consumer(), self.label) if await self.ready() else None

    async def read_with(self, consumer: AIOKafkaConsumer) -> None:
        while not self.should_stop:
            await self.step(consumer)

    def lost(self, exc: Exception) -> None:
        log.warning("%s: %s; reading again from the committed offsets in %.0fs", self.label, describe(exc),
                    self.retry_after_s)
        self.forget()

    def stopping(self) -> bool:
        return self.should_stop

    async def on_stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        self.forget()
        await stop_consumer(consumer, self.label)

    @mode.Service.task
    async def _consume(self) -> None:
        await self.keep_reading()


class VerdictSink(OwnGroupReader):
    """A sink of the verdict topic in its group (`group`): it settles each batch like an agent
    (`store`, or a dead letter, for every record) and commits the batch only then."""

    wiring: Wiring  # these two are bound by `register`
    outcomes: Outcomes

    def group(self) -> str:
        raise NotImplementedError

    async def store(self, records: list[RawRecord]) -> None:
        raise NotImplementedError

    def new_consumer(self) -> AIOKafkaConsumer:
        w = self.wiring
        return group_consumer(w.settings, w.bootstrap, self.group(), w.verdicts.get_topic_name(),
                              auto_offset_reset="earliest")

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        batches = await consumer.getmany(timeout_ms=200, max_records=VERDICT_BATCH)
        for tp, batch in batches.items():
            await self.outcomes.settle([RawRecord.of(r) for r in batch], self.store)
            await consumer.commit({tp: batch[-1].offset + 1})

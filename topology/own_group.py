"""A reader in a consumer group of its own, beside the Faust agents: the audit sink and the canary.

Agents share the worker's one consumer, so an agent that waits (a database outage retried while
its offsets are held, a slow canary pool) fills its buffer and then holds back every other agent.
A reader in its own group falls behind alone. It is a service of the app that makes its consumer,
runs `step` until stopped, and after any failure replaces the consumer, forgetting what it held in
memory: what it had not committed is read again. It never raises, since an exception in a service
would stop the whole app.
"""

from __future__ import annotations

import asyncio
import logging

import mode
from aiokafka import AIOKafkaConsumer

from guardstream.topology.outcomes import describe
from guardstream.topology.settings import Settings

log = logging.getLogger(__name__)
RECONNECT_AFTER_S = 1.0


def group_consumer(settings: Settings, bootstrap: str, group: str, *topics: str, **options) -> AIOKafkaConsumer:
    """A consumer of `group` that commits only when told, with the workers' timeouts and security."""
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group,
                            enable_auto_commit=False, session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
                            rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
                            heartbeat_interval_ms=1000, **settings.kafka_client_options(), **options)


class OwnGroupReader(mode.Service):
    label = "reader"  # in its log lines
    consumer: AIOKafkaConsumer | None = None

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

    async def on_stop(self) -> None:
        await self._disconnect()

    async def _disconnect(self) -> None:
        consumer, self.consumer = self.consumer, None
        self.forget()
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # noqa: BLE001 - a broken consumer is replaced either way
                log.warning("%s: stopping its consumer: %s", self.label, describe(exc))

    @mode.Service.task
    async def _consume(self) -> None:
        while not self.should_stop:
            try:
                if self.consumer is None:
                    if not await self.ready():
                        await asyncio.sleep(1)
                        continue
                    self.consumer = self.new_consumer()
                    await self.consumer.start()
                await self.step(self.consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - what was not committed is read again
                if self.should_stop:  # its consumer was stopped under it: nothing is wrong
                    return
                log.warning("%s: %s; reading again from the committed offsets in %.0fs", self.label, describe(exc),
                            RECONNECT_AFTER_S)
                await self._disconnect()
                await asyncio.sleep(RECONNECT_AFTER_S)

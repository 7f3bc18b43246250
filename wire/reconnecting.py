"""One way to keep reading Kafka whatever the broker does, for every reader outside Faust's agents:
the policies feed, the readers in consumer groups of their own, and a gateway's verdict reader.

A consumer is opened, read with until it fails, and stopped (bounded: a broker that is gone holds
nothing), and after a pause a new one resumes from what its reader kept (an offset in memory, or
its group's commits). Nothing but cancellation ends the loop, since a reader that stops would
freeze what it feeds; each reader says what a failure means for those who wait on it.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer

from guardstream.wire.errors import describe

log = logging.getLogger(__name__)
STOP_WAIT_S = 5  # how long stopping a consumer may take


async def stop_consumer(consumer: AIOKafkaConsumer | None, label: str) -> None:
    """Stop it within STOP_WAIT_S, also while being cancelled; a failure is logged, never raised."""
    if consumer is None:
        return
    [failed] = await asyncio.shield(asyncio.gather(asyncio.wait_for(consumer.stop(), STOP_WAIT_S),
                                                   return_exceptions=True))
    if failed is not None:
        log.warning("%s: stopping its consumer: %s", label, describe(failed))


async def started(consumer: AIOKafkaConsumer, label: str) -> AIOKafkaConsumer:
    """The consumer, started; one whose start fails is stopped again (its connections closed)."""
    try:
        await consumer.start()
    except BaseException:
        await stop_consumer(consumer, label)
        raise
    return consumer


class ReconnectingReader:
    label = "reader"  # in its log lines
    retry_after_s = 1.0
    consumer: AIOKafkaConsumer | None = None

    async def open(self) -> AIOKafkaConsumer | None:
        """A started consumer, positioned where reading resumes; None when it may not open yet
        (asked again a second later)."""
        raise NotImplementedError

    async def read_with(self, consumer: AIOKafkaConsumer) -> None:
        """Read with `consumer` until it fails (or, for a reader that can stop, until it should)."""
        raise NotImplementedError

    def lost(self, exc: Exception) -> None:
        """The reading failed: what those who wait on this reader are told (by default, the log)."""
        log.warning("%s: %s; reading again in %.0fs", self.label, describe(exc), self.retry_after_s)

    def stopping(self) -> bool:
        """Whether the reader is being stopped: a failure then is its consumer stopped under it."""
        return False

    async def keep_reading(self) -> None:
        """Read until cancelled (or stopped), replacing the consumer after each failure. A consumer
        already open (`self.consumer`, opened by a start that had to wait for it) is read first."""
        while not self.stopping():
            try:
                if self.consumer is None:
                    self.consumer = await self.open()
                    if self.consumer is None:
                        await asyncio.sleep(1)
                        continue
                await self.read_with(self.consumer)
            except asyncio.CancelledError:
                consumer, self.consumer = self.consumer, None
                await stop_consumer(consumer, self.label)
                raise
            except Exception as exc:  # noqa: BLE001 - the reader is replaced, never lost
                if self.stopping():
                    return
                consumer, self.consumer = self.consumer, None
                self.lost(exc)
                await stop_consumer(consumer, self.label)
                await asyncio.sleep(self.retry_after_s)

"""Audit: every verdict → a row in PostgreSQL or SQLite, in a consumer group of its own.

Not a Faust agent: agents share the worker's one consumer, so an agent that waits (a database
outage, retried while its offsets are held) fills its buffer and then holds every other reader of
the verdict topic, enforcement included. In its own group (`Settings.audit_group`) the audit
trail falls behind alone. It settles each batch like an agent (a row or a dead letter for every
record) and commits the batch only then.
"""

from __future__ import annotations

import asyncio
import logging

import mode
from aiokafka import AIOKafkaConsumer

from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes, describe
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.workers.sinks.audit import open_audit_store

log = logging.getLogger(__name__)
RECONNECT_AFTER_S = 1.0


def register(w: Wiring) -> None:
    settings, read_verdicts = w.settings, w.read_verdicts
    store = open_audit_store(settings.audit_target(), settings.audit_ca_file)
    outcomes = w.outcomes["audit"] = Outcomes("audit", w.send_letters)

    async def store_verdicts(records: list[RawRecord]) -> None:
        found, _ = read_verdicts(records)  # enforcement already dead-letters bad verdict records
        if found:
            await store.write(found)

    @w.app.service
    class Audit(mode.Service):
        consumer: AIOKafkaConsumer | None = None

        async def on_stop(self) -> None:
            await self._disconnect()
            await store.close()

        async def _disconnect(self) -> None:
            consumer, self.consumer = self.consumer, None
            if consumer is not None:
                try:
                    await consumer.stop()
                except Exception as exc:  # noqa: BLE001 - a broken consumer is replaced either way
                    log.warning("audit: stopping its consumer: %s", describe(exc))

        @mode.Service.task
        async def _consume(self) -> None:
            """Batches of verdicts → rows, then the commit. Never raises: an exception in a service
            would stop the whole app; a broken consumer is replaced."""
            while not self.should_stop:
                try:
                    if self.consumer is None:
                        self.consumer = AIOKafkaConsumer(
                            w.verdicts.get_topic_name(), bootstrap_servers=w.bootstrap,
                            group_id=settings.audit_group, enable_auto_commit=False, auto_offset_reset="earliest",
                            session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
                            rebalance_timeout_ms=int(settings.kafka_rebalance_timeout_s * 1000),
                            heartbeat_interval_ms=1000, **settings.kafka_client_options())
                        await self.consumer.start()
                    batches = await self.consumer.getmany(timeout_ms=200, max_records=VERDICT_BATCH)
                    for tp, batch in batches.items():
                        await outcomes.settle([RawRecord(r.topic, r.partition, r.offset, r.key, r.value) for r in batch],
                                              store_verdicts)
                        await self.consumer.commit({tp: batch[-1].offset + 1})
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - uncommitted records come again; rows are upserts
                    log.warning("audit: %s; reconnecting in %.0fs", describe(exc), RECONNECT_AFTER_S)
                    await self._disconnect()
                    await asyncio.sleep(RECONNECT_AFTER_S)

"""Audit: every verdict → a row in PostgreSQL or SQLite, in a consumer group of its own.

Not a Faust agent but a reader in a group of its own (`Settings.audit_group`, `topology/own_group.py`):
a database outage, retried while its offsets are held, holds back the audit trail alone, not
enforcement. It settles each batch like an agent (a row or a dead letter for every record) and
commits the batch only then.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer

from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes
from guardstream.topology.own_group import OwnGroupReader, bound, group_consumer
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.workers.sinks.audit import AuditStore, open_audit_store


class Audit(OwnGroupReader):
    label = "audit"
    wiring: Wiring  # these three are bound by `register`
    store: AuditStore
    outcomes: Outcomes

    def new_consumer(self) -> AIOKafkaConsumer:
        w = self.wiring
        return group_consumer(w.settings, w.bootstrap, w.settings.audit_group, w.verdicts.get_topic_name(),
                              auto_offset_reset="earliest")

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        """Batches of verdicts → rows, then the commit."""
        batches = await consumer.getmany(timeout_ms=200, max_records=VERDICT_BATCH)
        for tp, batch in batches.items():
            await self.outcomes.settle([RawRecord.of(r) for r in batch], self.store_verdicts)
            await consumer.commit({tp: batch[-1].offset + 1})

    async def store_verdicts(self, records: list[RawRecord]) -> None:
        found, _ = self.wiring.read_verdicts(records)  # enforcement already dead-letters bad verdict records
        if found:
            await self.store.write(found)

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.store.close()


def register(w: Wiring) -> None:
    store = open_audit_store(w.settings.audit_target(), w.settings.sinks.audit_ca_file)  # a wrong URL stops the start
    outcomes = w.outcomes["audit"] = Outcomes("audit", w.send_letters)
    w.app.service(bound(Audit, wiring=w, store=store, outcomes=outcomes))

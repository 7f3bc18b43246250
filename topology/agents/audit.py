"""Audit: every verdict → a row in PostgreSQL or SQLite, in a consumer group of its own.

Not a Faust agent but a reader in a group of its own (`Settings.audit_group`, `topology/own_group.py`):
a database outage, retried while its offsets are held, holds back the audit trail alone, not
enforcement. It settles each batch like an agent (a row or a dead letter for every record) and
commits the batch only then.
"""

from __future__ import annotations

from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes
from guardstream.topology.own_group import VerdictSink, bound
from guardstream.topology.wiring import Wiring
from guardstream.workers.sinks.audit import AuditStore, open_audit_store


class Audit(VerdictSink):
    label = "audit"
    audit: AuditStore  # bound by `register`

    def group(self) -> str:
        return self.wiring.settings.audit_group

    async def store(self, records: list[RawRecord]) -> None:
        found, _ = self.wiring.read_verdicts(records)  # enforcement already dead-letters bad verdict records
        if found:
            await self.audit.write(found)

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.audit.close()


def register(w: Wiring) -> None:
    store = open_audit_store(w.settings.audit_target(), w.settings.sinks.audit_ca_file)  # a wrong URL stops the start
    outcomes = w.outcomes["audit"] = Outcomes("audit", w.send_letters)
    w.app.service(bound(Audit, wiring=w, audit=store, outcomes=outcomes))

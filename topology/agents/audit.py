"""Audit: every verdict → a row in PostgreSQL or SQLite."""

from __future__ import annotations

from guardstream.schemas.intake import RawRecord
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.workers.sinks.audit import open_audit_store


def register(w: Wiring) -> None:
    app, settings, settled, read_verdicts, verdicts = w.app, w.settings, w.settled, w.read_verdicts, w.verdicts

    store = open_audit_store(settings.audit_target())

    async def store_verdicts(records: list[RawRecord]) -> None:
        found, _ = read_verdicts(records)  # enforcement already dead-letters bad verdict records
        if found:
            await store.write(found)

    @app.agent(verdicts, name="audit")
    async def audit(stream):
        try:
            await settled("audit", stream, VERDICT_BATCH, 0.2, store_verdicts)
        finally:
            await store.close()

"""The audit fallback when no database URL is configured: SQLite, idempotent by verdict id."""

import sqlite3

import pytest

from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent
from guardstream.workers.sinks.audit import SqliteAudit, open_audit_store


def verdict(i: int, **overrides) -> VerdictEvent:
    fields = dict(verdict_id=f"v{i}", source_event_id=f"e{i}", conversation_id="c", tenant="acme",
                  moderate=Moderate.prompt, model_id="m", model_variant="gen", risk_level=RiskLevel.safe,
                  action=Action.allow, policy="p", latency_ms=1.0)
    return VerdictEvent(**{**fields, **overrides})


async def test_redelivered_verdicts_add_no_rows(tmp_path):
    store = open_audit_store(f"sqlite:///{tmp_path / 'a' / 'audit.sqlite'}")
    assert isinstance(store, SqliteAudit)
    await store.write([verdict(1), verdict(2, categories=["PII"], risk_level=RiskLevel.unsafe, action=Action.block)])
    await store.write([verdict(2, latency_ms=99.0), verdict(3)])
    await store.close()
    rows = sqlite3.connect(tmp_path / "a" / "audit.sqlite").execute(
        "SELECT verdict_id, risk_level, categories, latency_ms FROM guard_verdicts ORDER BY verdict_id").fetchall()
    assert rows == [("v1", "Safe", "[]", 1.0), ("v2", "Unsafe", '["PII"]', 1.0), ("v3", "Safe", "[]", 1.0)]


def test_unknown_audit_urls_say_what_is_accepted():
    with pytest.raises(ValueError, match="use postgresql://user@host/db or sqlite:///path"):
        open_audit_store("mysql://db")

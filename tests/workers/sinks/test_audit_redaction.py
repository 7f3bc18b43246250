"""No password of the audit database reaches a log line or a dead letter, in any form psycopg takes."""

import asyncio

import pytest

from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent
from guardstream.workers.sinks.audit import AuditUnavailable, PostgresAudit


@pytest.mark.parametrize("url", [
    "postgresql://guard:s3cr3t-pw@127.0.0.1:1/audit",
    "postgresql://guard@127.0.0.1:1/audit?password=s3cr3t-pw",
    "postgres://guard:s3cr3t-pw@127.0.0.1:1/audit?sslmode=disable&sslpassword=s3cr3t-pw",
    "host=127.0.0.1 port=1 dbname=audit user=guard password=s3cr3t-pw",
])
def test_the_password_is_redacted_in_every_form_and_scrubbed_from_errors(url):
    store = PostgresAudit(url)
    assert store.describe() == "postgresql://guard@127.0.0.1:1/audit"
    assert store.scrub("connection to postgresql://guard:s3cr3t-pw@x failed") == "connection to postgresql://guard:***@x failed"
    verdict = VerdictEvent(verdict_id="v", source_event_id="e", conversation_id="c", tenant="t", moderate=Moderate.prompt,
                           model_id="m", model_variant="gen", risk_level=RiskLevel.safe, action=Action.allow, policy="p",
                           latency_ms=1)
    with pytest.raises(AuditUnavailable) as failed:  # nothing listens on port 1
        asyncio.run(store.write([verdict]))
    assert "s3cr3t-pw" not in str(failed.value) and failed.value.__cause__ is None and "127.0.0.1" in str(failed.value)

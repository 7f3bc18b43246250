"""An audit table created before the policy columns existed gets them when a worker opens it, and
new rows carry the policy version and what observe mode would have done."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from guardstream.schemas import Action
from guardstream.workers.sinks.audit import ADDED_COLUMNS, COLUMNS, PostgresAudit, SqliteAudit

from tests.workers.sinks.test_audit_sqlite import verdict

OLD_COLUMNS = [c for c in COLUMNS if c not in ADDED_COLUMNS]
OBSERVED = dict(policy_version="acme@3", observed=True, would_action=Action.block)


async def test_an_older_sqlite_table_gets_the_new_columns(tmp_path):
    path = tmp_path / "audit.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE guard_verdicts ({', '.join(OLD_COLUMNS)}, PRIMARY KEY (verdict_id))")
    store = SqliteAudit(path)
    await store.write([verdict(1, **OBSERVED), verdict(2)])
    await store.close()
    rows = sqlite3.connect(path).execute(
        "SELECT verdict_id, action, policy_version, observed, would_action FROM guard_verdicts ORDER BY verdict_id")
    assert rows.fetchall() == [("v1", "allow", "acme@3", 1, "block"), ("v2", "allow", None, 0, None)]


@pytest.mark.integration
async def test_an_older_postgres_table_gets_the_new_columns(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS guard_verdicts_old_shape")
        ddl = PostgresAudit.DDL.split(";")[0].replace("guard_verdicts", "guard_verdicts_old_shape")
        db.execute(ddl)
    store = PostgresAudit(pg_url)
    store.DDL = store.DDL.replace("guard_verdicts", "guard_verdicts_old_shape")  # this test's own table
    await store.open()
    await store._conn.execute(store.DDL)  # opening twice changes nothing
    await store.close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        columns = {r[0] for r in db.execute("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'guard_verdicts_old_shape'")}
        db.execute("DROP TABLE guard_verdicts_old_shape")
    assert set(ADDED_COLUMNS) <= columns and set(OLD_COLUMNS) <= columns

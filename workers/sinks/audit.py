"""The audit trail: verdicts stored by verdict id, so a redelivered verdict changes nothing.

PostgreSQL (`postgresql://...`) in production; SQLite (`sqlite:///path`) when no database is
configured. The moderated text is stored only when the worker was told to include it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from guardstream.schemas import VerdictEvent
from guardstream.workers import faults

COLUMNS = ("verdict_id", "source_event_id", "conversation_id", "tenant", "moderate", "model_id", "model_variant",
           "risk_level", "categories", "refusal", "probabilities", "action", "policy", "error", "latency_ms",
           "produced_at", "excerpt", "stream", "policy_version", "observed", "would_action")
# columns added since the table was first created, each with its type: added to an older table when opened
ADDED_COLUMNS = {"policy_version": "text", "observed": "boolean NOT NULL DEFAULT false", "would_action": "text"}


def _row(v: VerdictEvent) -> tuple:
    return (v.verdict_id, v.source_event_id, v.conversation_id, v.tenant, v.moderate.value, v.model_id,
            v.model_variant, v.risk_level.value, json.dumps(v.categories), v.refusal,
            json.dumps(v.probabilities) if v.probabilities is not None else None, v.action.value, v.policy, v.error,
            v.latency_ms, v.produced_at.isoformat(), v.excerpt,
            v.stream.model_dump_json() if v.stream is not None else None, v.policy_version, v.observed,
            v.would_action.value if v.would_action is not None else None)


SECRET_PARAMS = ("password", "sslpassword", "passfile", "sslkey")


def redact(url: str) -> tuple[str, list[str]]:
    """A PostgreSQL URL or key=value string as it may be shown: user, host, port and database only,
    in every form psycopg accepts (`:pw@`, `?password=`, `password=`); and the secrets it held, which
    are then scrubbed from any error text."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://(unparsable URL)", []
    secrets = [str(params[k]) for k in SECRET_PARAMS if params.get(k)]
    host = params.get("host", "") + (f":{params['port']}" if params.get("port") else "")
    user = f"{params['user']}@" if params.get("user") else ""
    return f"postgresql://{user}{host}/{params.get('dbname', '')}", secrets


def tls(url: str, ca_file: Path | None) -> dict[str, str]:
    """psycopg's options for a database with a private CA: its certificate and name verified
    (sslmode verify-full) unless the URL names another sslmode."""
    return {} if ca_file is None else {"sslrootcert": str(ca_file), "sslmode": conninfo_to_dict(url).get("sslmode", "verify-full")}


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class AuditUnavailable(ConnectionError):
    """The database cannot be reached now: transient."""


class AuditRejected(Exception):
    """The database refused a row (a permanent error): that verdict is dead-lettered, the rest stored."""

    error_code = "audit_rejected"


class AuditStore:
    """`write` reopens a lost connection on the next call and raises `AuditUnavailable` (transient:
    the audit agent retries while its offsets wait), or `AuditRejected` when the database refuses
    what it was given (permanent: the agent narrows the batch down to the refused row)."""

    async def write(self, verdicts: list[VerdictEvent]) -> None:
        faults.hit("audit")
        try:
            if not self.is_open():
                await self.open()
            await self.upsert(verdicts)
        except (psycopg.OperationalError, psycopg.InterfaceError, sqlite3.OperationalError, OSError) as exc:
            await self.close()
            raise AuditUnavailable(f"{self.describe()}: {self.scrub(str(exc))}") from None
        except (psycopg.Error, sqlite3.Error, ValueError) as exc:
            raise AuditRejected(f"{self.describe()} refused the row: {self.scrub(str(exc))}") from None

    def scrub(self, text: str) -> str:
        """Error text without any secret of the store's URL (it goes to logs and the DLQ)."""
        return text


class PostgresAudit(AuditStore):
    DDL = """
    CREATE TABLE IF NOT EXISTS guard_verdicts (
        verdict_id text PRIMARY KEY, source_event_id text NOT NULL, conversation_id text NOT NULL,
        tenant text NOT NULL, moderate text NOT NULL, model_id text NOT NULL, model_variant text NOT NULL,
        risk_level text NOT NULL, categories jsonb NOT NULL, refusal boolean, probabilities jsonb,
        action text NOT NULL, policy text NOT NULL, error text, latency_ms double precision NOT NULL,
        produced_at timestamptz NOT NULL, excerpt text, stream jsonb, stored_at timestamptz NOT NULL DEFAULT now());
    """ + "".join(f"ALTER TABLE guard_verdicts ADD COLUMN IF NOT EXISTS {name} {kind};\n"
                  for name, kind in ADDED_COLUMNS.items())

    def __init__(self, url: str, ca_file: Path | None = None):
        """ca_file: the database server's CA (a private one); the server's certificate and name are
        then verified (sslmode verify-full) unless the URL names another sslmode."""
        self.url = url
        self.tls = tls(url, ca_file)
        self._conn: psycopg.AsyncConnection | None = None

    def is_open(self) -> bool:
        return self._conn is not None

    def describe(self) -> str:
        return redact(self.url)[0]

    def scrub(self, text: str) -> str:
        return scrub(text, redact(self.url)[1])

    async def open(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **self.tls)
        await self._conn.execute(self.DDL)

    async def upsert(self, verdicts: list[VerdictEvent]) -> None:
        sql = (f"INSERT INTO guard_verdicts ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
               "ON CONFLICT (verdict_id) DO NOTHING")
        async with self._conn.transaction():
            async with self._conn.cursor() as cur:
                await cur.executemany(sql, [_row(v) for v in verdicts])

    async def close(self) -> None:
        if self._conn:
            await self._conn.close()
            self._conn = None


class SqliteAudit(AuditStore):
    def __init__(self, path: Path):
        self.path = path
        self._db: sqlite3.Connection | None = None

    def is_open(self) -> bool:
        return self._db is not None

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute(f"CREATE TABLE IF NOT EXISTS guard_verdicts ({', '.join(COLUMNS)}, PRIMARY KEY (verdict_id))")
        present = {row[1] for row in self._db.execute("PRAGMA table_info(guard_verdicts)")}
        for name in ADDED_COLUMNS.keys() - present:
            self._db.execute(f"ALTER TABLE guard_verdicts ADD COLUMN {name}")

    async def upsert(self, verdicts: list[VerdictEvent]) -> None:
        def write() -> None:
            with self._db:
                self._db.executemany(
                    f"INSERT OR IGNORE INTO guard_verdicts ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                    [_row(v) for v in verdicts])

        await asyncio.to_thread(write)

    async def close(self) -> None:
        if self._db:
            self._db.close()
            self._db = None


def is_postgres(url: str | None) -> bool:
    return bool(url) and url.startswith(("postgresql://", "postgres://"))


def open_audit_store(target: str, ca_file: Path | None = None) -> AuditStore:
    if is_postgres(target):
        return PostgresAudit(target, ca_file)
    if target.startswith("sqlite:///"):
        return SqliteAudit(Path(target.removeprefix("sqlite:///")))
    raise ValueError(f"audit url {target!r}: use postgresql://user@host/db or sqlite:///path/to/file")

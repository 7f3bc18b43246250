"""The review queue: verdicts whose action is `review`, kept in PostgreSQL until a person decides.

An item's id is its action's (`derive_id("action", verdict_id)`), so a redelivered verdict adds
nothing. A reviewer claims an item under a lease: a claim locks the rows it looks at and skips the
ones another claim holds (`FOR UPDATE SKIP LOCKED`), so two reviewers never hold the same item; an
expired lease leaves the item claimable again. A decision needs the lease still held. The
conversation's text is kept only where the tenant's policy says so, and purged after its retention.
The tables live beside the audit trail's, so a decision joins its verdict (`guard_verdicts`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import psycopg
from psycopg.rows import dict_row

from guardstream.schemas import ReviewDecision, RiskLevel, VerdictEvent, derive_id
from guardstream.workers.sinks.audit import AuditRejected, AuditUnavailable, is_postgres, redact, scrub, tls
from guardstream.workers.sinks.enforcement import action_for

SEVERITY = {RiskLevel.error: 3, RiskLevel.unsafe: 2, RiskLevel.controversial: 1, RiskLevel.safe: 0}
Decision = Literal["uphold", "overturn"]
DDL = """
CREATE TABLE IF NOT EXISTS review_items (
    item_id text PRIMARY KEY, verdict_id text NOT NULL, source_event_id text NOT NULL, conversation_id text NOT NULL,
    tenant text NOT NULL, moderate text NOT NULL, model_id text NOT NULL, risk_level text NOT NULL,
    categories jsonb NOT NULL, probabilities jsonb, language text, policy_version text, reason text NOT NULL,
    severity integer NOT NULL, stream_id text, conversation jsonb, text_until timestamptz,
    produced_at timestamptz NOT NULL, queued_at timestamptz NOT NULL DEFAULT now(),
    lease_holder text, lease_until timestamptz, decided_at timestamptz);
CREATE INDEX IF NOT EXISTS review_items_open ON review_items (tenant, severity DESC, produced_at)
    WHERE decided_at IS NULL;
CREATE TABLE IF NOT EXISTS review_decisions (
    decision_id text PRIMARY KEY, item_id text NOT NULL UNIQUE REFERENCES review_items (item_id),
    verdict_id text NOT NULL, tenant text NOT NULL, reviewer text NOT NULL,
    decision text NOT NULL CHECK (decision IN ('uphold', 'overturn')), categories jsonb NOT NULL, note text,
    decided_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
ALTER TABLE review_decisions ADD COLUMN IF NOT EXISTS published_at timestamptz;
CREATE INDEX IF NOT EXISTS review_decisions_unpublished ON review_decisions (decided_at) WHERE published_at IS NULL;
"""
# an item with its decision, as `decision_event` reads it
DECIDED = ("SELECT i.*, d.decision_id, d.decision, d.reviewer, d.note, d.decided_at AS decision_at, "
           "d.categories AS decided_categories FROM review_items i JOIN review_decisions d USING (item_id)")
ITEM_COLUMNS = ("item_id", "verdict_id", "source_event_id", "conversation_id", "tenant", "moderate", "model_id",
                "risk_level", "categories", "probabilities", "language", "policy_version", "reason", "severity",
                "stream_id", "conversation", "text_until", "produced_at")


@dataclass(frozen=True)
class Queued:
    """A verdict sent to review, as the queue keeps it; `text_days`: how long its text is kept (None: not kept)."""
    verdict: VerdictEvent
    text_days: int | None

    def row(self) -> tuple:
        v = self.verdict
        keep = self.text_days is not None and v.conversation is not None
        return (derive_id("action", v.verdict_id), v.verdict_id, v.source_event_id, v.conversation_id, v.tenant,
                v.moderate.value, v.model_id, v.risk_level.value, json.dumps(v.categories),
                json.dumps(v.probabilities) if v.probabilities is not None else None, v.language, v.policy_version,
                action_for(v).reason, SEVERITY[v.risk_level], v.stream.stream_id if v.stream else None,
                json.dumps([{"role": m.role.value, "content": _no_nul(m.content)} for m in v.conversation]) if keep else None,
                v.produced_at + timedelta(days=self.text_days) if keep else None, v.produced_at)


def _no_nul(text: str) -> str:
    """The text as PostgreSQL's jsonb takes it: it refuses the NUL character, which a user's text
    may hold, so a NUL is kept as U+FFFD and the item still reaches its reviewers."""
    return text.replace("\x00", "\ufffd")


def decision_event(row: dict) -> ReviewDecision:
    """The decision as it goes on the review-decisions topic, from a decided item (`DECIDED`): the
    reviewer's categories, else the model's where the reviewer found the content unsafe."""
    event = ReviewDecision(
        decision_id=row["decision_id"], item_id=row["item_id"], verdict_id=row["verdict_id"],
        source_event_id=row["source_event_id"], conversation_id=row["conversation_id"], tenant=row["tenant"],
        reviewer=row["reviewer"], decision=row["decision"], risk_level=RiskLevel(row["risk_level"]),
        categories=row["decided_categories"], note=row["note"], decided_at=row["decision_at"])
    return event.model_copy(update={"categories": row["categories"]}) if event.unsafe() and not event.categories else event


def open_review_store(url: str | None, ca_file: Path | None) -> ReviewStore | None:
    """The queue in the audit database at `url`, with its TLS; None where that is not PostgreSQL (no queue)."""
    return ReviewStore(url, **tls(url, ca_file)) if is_postgres(url) else None


class LeaseLost(Exception):
    """The item is not held by this reviewer (its lease expired and another took it, or it is decided)."""


class ReviewStore:
    """The queue's tables in one PostgreSQL database. `add` raises `AuditUnavailable` (transient:
    the review agent retries while its offsets wait) or `AuditRejected` (a row refused), as the
    audit store does; the reviewers' calls raise psycopg's errors. One connection, one call at a
    time (the console's requests share it): another call's statement never lands inside a
    decision's transaction."""

    def __init__(self, url: str, **connect):
        self.url = url
        self.connect = connect  # the audit store's TLS settings
        self._conn: psycopg.AsyncConnection | None = None
        self._turn = asyncio.Lock()

    def describe(self) -> str:
        return redact(self.url)[0]

    async def _open(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, row_factory=dict_row,
                                                               **self.connect)
            await self._conn.execute(DDL)
        return self._conn

    @asynccontextmanager
    async def _db(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """The connection, this call's alone until it is done; dropped when the server is gone."""
        async with self._turn:
            try:
                yield await self._open()
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError):
                await self.close()
                raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    @asynccontextmanager
    async def _reached(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """The connection, for the workers' calls: a database that cannot be reached is
        `AuditUnavailable` (transient: the agent retries while its offsets wait)."""
        try:
            async with self._db() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
            raise AuditUnavailable(f"{self.describe()}: {scrub(str(exc), redact(self.url)[1])}") from None

    async def add(self, queued: list[Queued]) -> None:
        sql = (f"INSERT INTO review_items ({', '.join(ITEM_COLUMNS)}) VALUES ({', '.join(['%s'] * len(ITEM_COLUMNS))}) "
               "ON CONFLICT (item_id) DO NOTHING")
        try:
            async with self._reached() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.executemany(sql, [q.row() for q in queued])
        except (psycopg.Error, ValueError) as exc:
            raise AuditRejected(f"{self.describe()} refused the review item: {scrub(str(exc), redact(self.url)[1])}") from None

    async def stored_decisions(self, decision_ids: list[str]) -> dict[str, ReviewDecision]:
        """The decisions of `decision_ids` that the queue holds, as the console published them: what
        enforcement checks a decision event against before it acts on it."""
        async with self._reached() as conn:
            cur = await conn.execute(f"{DECIDED} WHERE d.decision_id = ANY(%s)", (decision_ids,))
            return {row["decision_id"]: decision_event(row) for row in await cur.fetchall()}

    async def claim(self, tenants: list[str], reviewer: str, lease: timedelta, item_id: str | None = None) -> dict | None:
        """The item `reviewer` holds, else the most severe, oldest open item of `tenants` no one
        else holds (or `item_id`, if it is such an item), now held by `reviewer` until the lease
        ends; None when there is none."""
        async with self._db() as conn:
            cur = await conn.execute(
                "UPDATE review_items SET lease_holder = %(reviewer)s, lease_until = now() + %(lease)s "
                "WHERE item_id = (SELECT item_id FROM review_items WHERE tenant = ANY(%(tenants)s) AND decided_at IS NULL "
                "  AND (lease_until IS NULL OR lease_until < now() OR lease_holder = %(reviewer)s) "
                "  AND (%(item)s::text IS NULL OR item_id = %(item)s) "
                "  ORDER BY lease_holder IS NOT DISTINCT FROM %(reviewer)s DESC, severity DESC, produced_at "
                "  LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *",
                {"reviewer": reviewer, "lease": lease, "tenants": tenants, "item": item_id})
            return await cur.fetchone()

    async def release(self, item_id: str, reviewer: str) -> None:
        """The reviewer's lease given up: the item is back in the queue."""
        async with self._db() as conn:
            await conn.execute("UPDATE review_items SET lease_holder = NULL, lease_until = NULL "
                               "WHERE item_id = %s AND lease_holder = %s AND decided_at IS NULL", (item_id, reviewer))

    async def decide(self, item_id: str, reviewer: str, decision: Decision, categories: list[str],
                     note: str | None) -> dict:
        """The decision on an item the reviewer holds, stored with the item closed; the decided item
        (`DECIDED`), to publish and then `mark_published`."""
        async with self._db() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    "UPDATE review_items SET decided_at = now(), lease_until = NULL WHERE item_id = %s "
                    "AND lease_holder = %s AND lease_until >= now() AND decided_at IS NULL RETURNING verdict_id, tenant",
                    (item_id, reviewer))
                item = await cur.fetchone()
                if item is None:
                    raise LeaseLost(f"item {item_id} is not held by {reviewer}: its lease expired (another reviewer may "
                                    f"hold it now) or it is decided; claim it again")
                await conn.execute(
                    "INSERT INTO review_decisions (decision_id, item_id, verdict_id, tenant, reviewer, decision, categories, "
                    "note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (derive_id("review-decision", item_id), item_id, item["verdict_id"], item["tenant"], reviewer,
                     decision, json.dumps(categories), note))
                cur = await conn.execute(f"{DECIDED} WHERE item_id = %s", (item_id,))
                return await cur.fetchone()

    async def unpublished(self, limit: int = 100) -> list[dict]:
        """Decided items whose decision is not yet on the topic (`DECIDED`), the oldest first."""
        async with self._db() as conn:
            cur = await conn.execute(f"{DECIDED} WHERE d.published_at IS NULL ORDER BY d.decided_at LIMIT %s", (limit,))
            return await cur.fetchall()

    async def mark_published(self, decision_ids: list[str]) -> None:
        async with self._db() as conn:
            await conn.execute("UPDATE review_decisions SET published_at = now() WHERE decision_id = ANY(%s) "
                               "AND published_at IS NULL", (decision_ids,))

    async def item(self, item_id: str, tenants: list[str]) -> dict | None:
        """One item of `tenants`, with its decision if it has one."""
        async with self._db() as conn:
            cur = await conn.execute(
                "SELECT i.*, d.decision, d.reviewer, d.note, d.categories AS decided_categories FROM review_items i "
                "LEFT JOIN review_decisions d USING (item_id) WHERE i.item_id = %s AND i.tenant = ANY(%s)",
                (item_id, tenants))
            return await cur.fetchone()

    async def queue(self, tenants: list[str], limit: int = 100, risk: str | None = None) -> list[dict]:
        """The open items of `tenants`, the most severe and oldest first (of one tier, if `risk`)."""
        async with self._db() as conn:
            cur = await conn.execute(
                "SELECT *, lease_until >= now() AS leased FROM review_items WHERE tenant = ANY(%s) AND decided_at IS NULL "
                "AND (%s::text IS NULL OR risk_level = %s) ORDER BY severity DESC, produced_at LIMIT %s",
                (tenants, risk, risk, limit))
            return await cur.fetchall()

    async def depth(self) -> list[dict]:
        """Each tenant's open items and the oldest one's age in seconds."""
        async with self._db() as conn:
            cur = await conn.execute(
                "SELECT tenant, count(*) AS items, extract(epoch FROM now() - min(produced_at)) AS oldest_s "
                "FROM review_items WHERE decided_at IS NULL GROUP BY tenant")
            return await cur.fetchall()

    async def decided(self, tenants: list[str] | None = None) -> list[dict]:
        """Every decided item (of `tenants`, when given) with its decision, oldest decision first."""
        async with self._db() as conn:
            cur = await conn.execute(f"{DECIDED} WHERE %(tenants)s::text[] IS NULL OR i.tenant = ANY(%(tenants)s) "
                                     "ORDER BY d.decided_at", {"tenants": tenants})
            return await cur.fetchall()

    async def decision_rates(self) -> tuple[list[dict], list[dict]]:
        """Decisions in the last hour per tenant, and per category of the model's (`None` for an
        item it named none) the decisions and overturns of the last day."""
        async with self._db() as conn:
            hourly = await conn.execute("SELECT tenant, count(*) AS decided FROM review_decisions "
                                        "WHERE decided_at > now() - interval '1 hour' GROUP BY tenant")
            by_category = await conn.execute(
                "SELECT c.category, count(*) AS decided, count(*) FILTER (WHERE d.decision = 'overturn') AS overturned "
                "FROM review_decisions d JOIN review_items i USING (item_id), LATERAL jsonb_array_elements_text("
                "  CASE WHEN jsonb_array_length(i.categories) = 0 THEN '[\"None\"]'::jsonb ELSE i.categories END) "
                "  AS c(category) WHERE d.decided_at > now() - interval '1 day' GROUP BY c.category")
            return await hourly.fetchall(), await by_category.fetchall()

    async def purge_text(self, now: datetime | None = None) -> int:
        """The text of every item past its retention dropped; how many."""
        async with self._db() as conn:
            cur = await conn.execute("UPDATE review_items SET conversation = NULL, text_until = NULL "
                                     "WHERE text_until < coalesce(%s, now())", (now,))
            return cur.rowcount

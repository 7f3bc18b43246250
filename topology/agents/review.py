"""Review: every verdict whose action is `review` → an item in the review queue, in a consumer group of its own.

Like audit, a reader in its own group (`Settings.review_group`): a database outage, retried while
its offsets are held, holds back the queue alone. It settles each batch (an item, or a dead letter
for a row the database refuses) and commits only then. Every 10 s it sets the queue's and the
decisions' gauges from the database, and every minute it purges the text of items past their
tenant's retention.
"""

from __future__ import annotations

import logging
import time

import psycopg
from aiokafka import AIOKafkaConsumer

from guardstream.schemas import Action, Moderate, VerdictEvent
from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes
from guardstream.topology.own_group import VerdictSink, bound
from guardstream.topology.wiring import Wiring
from guardstream.wire import metrics
from guardstream.workers.sinks.review import Queued, ReviewStore, open_review_store

log = logging.getLogger(__name__)
PURGE_EVERY_S = 60.0
MEASURE_EVERY_S = 10.0


class Review(VerdictSink):
    label = "review"
    queue: ReviewStore  # bound by `register`
    purged_at = measured_at = 0.0
    shown: dict = {}  # each gauge → the labels it has

    def group(self) -> str:
        return self.wiring.settings.review_group

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        """A batch settled and committed, then the gauges and the text purge when they are due."""
        await super().step(consumer)
        try:
            await self.upkeep()
        except (psycopg.Error, OSError) as exc:  # the database away: the batches wait on it, the upkeep is retried when due
            log.warning("review: the queue's gauges or purge: %s: %s", type(exc).__name__, exc)

    async def upkeep(self) -> None:
        if time.monotonic() - self.measured_at > MEASURE_EVERY_S:
            self.measured_at = time.monotonic()
            self.show_depth(await self.queue.depth())
            self.show_rates(*await self.queue.decision_rates())
        if time.monotonic() - self.purged_at > PURGE_EVERY_S:
            self.purged_at = time.monotonic()
            if purged := await self.queue.purge_text():
                log.info("review: dropped the text of %d items past their retention", purged)

    def show_depth(self, tenants: list[dict]) -> None:
        """The queue's gauges: items and the oldest's age per tenant label (tenants no policy names
        summed as `other`)."""
        items: dict[str, float] = {}
        oldest: dict[str, float] = {}
        for row in tenants:
            label = self.wiring.policies.metric_tenant(row["tenant"])
            items[label] = items.get(label, 0) + row["items"]
            oldest[label] = max(oldest.get(label, 0.0), float(row["oldest_s"]))
        self.show(metrics.REVIEW_QUEUE, items)
        self.show(metrics.REVIEW_OLDEST, oldest)

    def show_rates(self, hourly: list[dict], by_category: list[dict]) -> None:
        """Decisions in the last hour per tenant label, and the last day's overturn ratio per category."""
        decided: dict[str, float] = {}
        for row in hourly:
            label = self.wiring.policies.metric_tenant(row["tenant"])
            decided[label] = decided.get(label, 0) + row["decided"]
        counts: dict[str, tuple[int, int]] = {}
        for row in by_category:
            label = metrics.category(row["category"])
            total, overturned = counts.get(label, (0, 0))
            counts[label] = (total + row["decided"], overturned + row["overturned"])
        self.show(metrics.REVIEW_DECIDED, decided)
        self.show(metrics.REVIEW_OVERTURNED, {label: overturned / total for label, (total, overturned) in counts.items()})

    def show(self, gauge, values: dict[str, float]) -> None:
        """`values` on `gauge`, by label; a label shown before and absent now reads 0."""
        for label in self.shown.get(gauge, frozenset()) - values.keys():
            gauge.labels(label).set(0)
        for label, value in values.items():
            gauge.labels(label).set(value)
        self.shown = {**self.shown, gauge: self.shown.get(gauge, frozenset()) | values.keys()}

    async def store(self, records: list[RawRecord]) -> None:
        found, _ = self.wiring.read_verdicts(records)  # enforcement dead-letters bad verdict records
        queued = []
        for verdict in (v for v in found if v.action is Action.review and queued_for_review(v)):
            kept = self.wiring.policies.for_tenant(verdict.tenant).review
            queued.append(Queued(verdict, kept.retention_days if kept.store_text else None))
        if queued:
            await self.queue.add(queued)

    async def on_stop(self) -> None:
        await super().on_stop()
        await self.queue.close()


def queued_for_review(verdict: VerdictEvent) -> bool:
    """Whether a review verdict is an item: Gen's are, and a stream's prompt and whole-stream
    verdicts (its chunks' are not: the stream is reviewed once)."""
    return verdict.stream is None or verdict.stream.final or verdict.moderate is Moderate.prompt


def register(w: Wiring) -> None:
    queue = open_review_store(w.settings.audit_target(), w.settings.sinks.audit_ca_file)
    if queue is None:
        log.warning("review: no review queue, since it needs PostgreSQL (GUARDSTREAM_AUDIT_URL=postgresql://...); "
                    "review actions still reach the actions topic")
        return
    outcomes = w.outcomes["review"] = Outcomes("review", w.send_letters)
    w.app.service(bound(Review, wiring=w, queue=queue, outcomes=outcomes))

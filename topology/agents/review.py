"""Review: every verdict whose action is `review` → an item in the review queue, in a consumer group of its own.

Like audit, a reader in its own group (`Settings.review_group`): a database outage, retried while
its offsets are held, holds back the queue alone. It settles each batch (an item, or a dead letter
for a row the database refuses) and commits only then. Every 10 s it sets the queue's gauges from
the database, and every minute it purges the text of items past their tenant's retention.
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer

from guardstream.schemas import Action, Moderate, VerdictEvent
from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes
from guardstream.topology.own_group import VerdictSink, bound
from guardstream.topology.wiring import Wiring
from guardstream.wire import metrics
from guardstream.workers.sinks.audit import tls
from guardstream.workers.sinks.review import Queued, ReviewStore

log = logging.getLogger(__name__)
PURGE_EVERY_S = 60.0
MEASURE_EVERY_S = 10.0


class Review(VerdictSink):
    label = "review"
    queue: ReviewStore  # bound by `register`
    purged_at = measured_at = 0.0
    shown: frozenset[str] = frozenset()  # the tenant labels the gauges have

    def group(self) -> str:
        return self.wiring.settings.review_group

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        """A batch settled and committed, then the text purge when it is due."""
        await super().step(consumer)
        if time.monotonic() - self.measured_at > MEASURE_EVERY_S:
            self.measured_at = time.monotonic()
            self.show_depth(await self.queue.depth())
        if time.monotonic() - self.purged_at > PURGE_EVERY_S:
            self.purged_at = time.monotonic()
            if purged := await self.queue.purge_text():
                log.info("review: dropped the text of %d items past their retention", purged)

    def show_depth(self, tenants: list[dict]) -> None:
        """The queue's gauges: items and the oldest's age per tenant label (tenants no policy names
        summed as `other`); a label whose queue emptied reads 0."""
        depth: dict[str, tuple[int, float]] = {}
        for row in tenants:
            label = self.wiring.policies.metric_tenant(row["tenant"])
            items, oldest = depth.get(label, (0, 0.0))
            depth[label] = (items + row["items"], max(oldest, float(row["oldest_s"])))
        for label in self.shown - depth.keys():
            depth[label] = (0, 0.0)
        for label, (items, oldest) in depth.items():
            metrics.REVIEW_QUEUE.labels(label).set(items)
            metrics.REVIEW_OLDEST.labels(label).set(oldest)
        self.shown = frozenset(depth)

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
    target = w.settings.audit_target()
    if not target.startswith(("postgresql://", "postgres://")):
        log.warning("review: no review queue, since it needs PostgreSQL (GUARDSTREAM_AUDIT_URL=postgresql://...); "
                    "review actions still reach the actions topic")
        return
    outcomes = w.outcomes["review"] = Outcomes("review", w.send_letters)
    w.app.service(bound(Review, wiring=w, queue=ReviewStore(target, **tls(target, w.settings.sinks.audit_ca_file)), outcomes=outcomes))

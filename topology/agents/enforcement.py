"""Enforcement: every verdict → one action event a gateway can act on; the one agent that dead-letters bad verdict records.
Every reviewer's decision → the action after review (block or allow), on the same actions topic,
once the decision is found as it is in the review queue's database (the console stores each
before it publishes it): a decision event no reviewer made is dead-lettered, not followed."""

from __future__ import annotations

from guardstream.schemas import DeadLetter, ReviewDecision
from guardstream.schemas.intake import RawRecord, dead_letter, decode
from guardstream.wire import metrics
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.workers.sinks.enforcement import action_for, follow_up
from guardstream.workers.sinks.review import ReviewStore, open_review_store

NO_QUEUE = ("no review queue to check it against: the worker that follows decisions needs the queue's database "
            "(GUARDSTREAM_AUDIT_URL=postgresql://...)")


class Enforcement:
    def __init__(self, w: Wiring, queue: ReviewStore | None):
        self.w = w
        self.queue = queue  # where decisions are checked; None: every decision event is refused

    async def enforce(self, records: list[RawRecord]) -> None:
        found, letters = self.w.read_verdicts(records)
        sends = []
        for verdict in found:
            action = action_for(verdict)
            tenant = self.w.policies.metric_tenant(action.tenant)
            language = self.w.policies.metric_language(verdict.language)
            metrics.ACTIONS.labels(tenant, language, action.action.value).inc()
            if action.would_action is not None:
                metrics.WOULD_ACTIONS.labels(tenant, language, action.would_action.value).inc()
            sends.append((self.w.actions, action.conversation_id, action.model_dump_json().encode()))
        await self.w.deliver(sends + [self.w.dead(d) for d in letters])  # the one agent that reports bad verdict records

    async def follow(self, records: list[RawRecord]) -> None:
        decoded = [decode(r, ReviewDecision, self.w.settings.max_event_bytes) for r in records]
        claimed = [d.decision_id for d in decoded if isinstance(d, ReviewDecision)]
        stored = await self.queue.stored_decisions(claimed) if self.queue is not None and claimed else {}
        actions, letters = [], []
        for record, d in zip(records, decoded):
            if isinstance(d, DeadLetter):
                letters.append(d)
            elif stored.get(d.decision_id) == d:
                actions.append(follow_up(d))
            else:
                why = NO_QUEUE if self.queue is None else (
                    "no such decision in the review queue" if d.decision_id not in stored
                    else "it differs from the decision the review queue holds under its id")
                letters.append(dead_letter(record, "unverified_decision", f"a review decision not followed: {why}"))
        await self.w.deliver([(self.w.actions, a.conversation_id, a.model_dump_json().encode()) for a in actions] +
                             [self.w.dead(d) for d in letters])


def register(w: Wiring) -> None:
    enforcement = Enforcement(w, open_review_store(w.settings.audit_target(), w.settings.sinks.audit_ca_file))

    @w.app.agent(w.verdicts, name="enforcement")
    async def enforcement_agent(stream):
        await w.settled("enforcement", stream, VERDICT_BATCH, 0.05, enforcement.enforce)

    @w.app.agent(w.review_decisions, name="review-follow-up")
    async def follow_up_agent(stream):
        await w.settled("review-follow-up", stream, VERDICT_BATCH, 0.05, enforcement.follow)

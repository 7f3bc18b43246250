"""Enforcement: every verdict → one action event a gateway can act on; the one agent that dead-letters bad verdict records.
Every reviewer's decision → the action after review (block or allow), on the same actions topic."""

from __future__ import annotations

from guardstream.schemas import DeadLetter, ReviewDecision
from guardstream.schemas.intake import RawRecord, decode
from guardstream.wire import metrics
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.workers.sinks.enforcement import action_for, follow_up


class Enforcement:
    def __init__(self, w: Wiring):
        self.w = w

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
        actions = [follow_up(d) for d in decoded if isinstance(d, ReviewDecision)]
        await self.w.deliver([(self.w.actions, a.conversation_id, a.model_dump_json().encode()) for a in actions] +
                             [self.w.dead(d) for d in decoded if isinstance(d, DeadLetter)])


def register(w: Wiring) -> None:
    enforcement = Enforcement(w)

    @w.app.agent(w.verdicts, name="enforcement")
    async def enforcement_agent(stream):
        await w.settled("enforcement", stream, VERDICT_BATCH, 0.05, enforcement.enforce)

    @w.app.agent(w.review_decisions, name="review-follow-up")
    async def follow_up_agent(stream):
        await w.settled("review-follow-up", stream, VERDICT_BATCH, 0.05, enforcement.follow)

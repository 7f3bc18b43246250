"""Enforcement: every verdict → one action event a gateway can act on; the one agent that dead-letters bad verdict records."""

from __future__ import annotations

from guardstream.schemas.intake import RawRecord
from guardstream.wire import metrics
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.workers.sinks.enforcement import action_for


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


def register(w: Wiring) -> None:
    enforcement = Enforcement(w)

    @w.app.agent(w.verdicts, name="enforcement")
    async def enforcement_agent(stream):
        await w.settled("enforcement", stream, VERDICT_BATCH, 0.05, enforcement.enforce)

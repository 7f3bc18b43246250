"""Enforcement: every verdict → one action event a gateway can act on; the one agent that dead-letters bad verdict records."""

from __future__ import annotations

from guardstream.schemas.intake import RawRecord
from guardstream.topology.wiring import VERDICT_BATCH, Wiring
from guardstream.topology import metrics
from guardstream.workers.sinks.enforcement import action_for


def register(w: Wiring) -> None:
    app, deliver, dead, settled, read_verdicts = w.app, w.deliver, w.dead, w.settled, w.read_verdicts
    verdicts, actions = w.verdicts, w.actions

    async def enforce(records: list[RawRecord]) -> None:
        found, letters = read_verdicts(records)
        sends = []
        for verdict in found:
            action = action_for(verdict)
            tenant = w.settings.policy.metric_tenant(action.tenant)
            metrics.ACTIONS.labels(tenant, action.action.value).inc()
            if action.would_action is not None:
                metrics.WOULD_ACTIONS.labels(tenant, action.would_action.value).inc()
            sends.append((actions, action.conversation_id, action.model_dump_json().encode()))
        await deliver(sends + [dead(d) for d in letters])  # the one agent that reports bad verdict records

    @app.agent(verdicts, name="enforcement")
    async def enforcement(stream):
        await settled("enforcement", stream, VERDICT_BATCH, 0.05, enforce)

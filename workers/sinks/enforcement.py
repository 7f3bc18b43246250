"""Enforcement: every verdict becomes one action event that a gateway can act on."""

from guardstream.schemas import Action, ActionEvent, VerdictEvent, derive_id


def action_for(verdict: VerdictEvent) -> ActionEvent:
    found = ", ".join(verdict.categories) or "no unsafe category"
    reason = f"{verdict.risk_level.value} ({found}) under {verdict.policy}"
    if verdict.stream is not None and verdict.action is Action.stop:
        reason += f"; stop stream {verdict.stream.stream_id} at reply token {verdict.stream.stop_token}"
    if verdict.error:
        reason += f"; model error: {verdict.error[:200]}"
    if verdict.would_action is not None:
        reason += f"; observe mode: would {verdict.would_action.value}"
    return ActionEvent(
        action_id=derive_id("action", verdict.verdict_id), verdict_id=verdict.verdict_id,
        source_event_id=verdict.source_event_id, conversation_id=verdict.conversation_id, tenant=verdict.tenant,
        action=verdict.action, reason=reason, policy_version=verdict.policy_version, observed=verdict.observed,
        would_action=verdict.would_action,
    )

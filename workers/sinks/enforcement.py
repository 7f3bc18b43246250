"""Enforcement: every verdict becomes one action event that a gateway can act on, and every
review decision one more, the block or allow after review."""

from guardstream.schemas import Action, ActionEvent, ReviewDecision, VerdictEvent, derive_id


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


def follow_up(decision: ReviewDecision) -> ActionEvent:
    """The action after review: block where the reviewer found the content unsafe, else allow."""
    found = ", ".join(decision.categories) or "no unsafe category"
    return ActionEvent(
        action_id=derive_id("review-action", decision.decision_id), verdict_id=decision.verdict_id,
        source_event_id=decision.source_event_id, conversation_id=decision.conversation_id, tenant=decision.tenant,
        action=Action.block if decision.unsafe() else Action.allow, decision_id=decision.decision_id,
        reason=f"after review by {decision.reviewer}: {decision.decision} of {decision.risk_level.value} ({found})",
    )

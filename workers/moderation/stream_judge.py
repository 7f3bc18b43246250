"""The Stream path's judgement: token verdicts → chunk and stream verdicts under the tenant's policy.
Pure: no model, no store; it reads and updates only the stream's `StreamState`.

- each reply token is judged by the tenant's policy as Gen's verdicts are (mode, per-category
  actions, `unsafe_action`, review thresholds): `debounce` consecutive tokens it would block trip
  one `stop` action per stream, and chunks after it are `block`ed; a token it sends to review
  makes its chunk (and the stream's final verdict) `review`;
- a failed step (pool down, engine error) gives `Error` verdicts that the tenant's fail mode
  decides; fail closed stops the stream once;
- the final chunk also yields a verdict for the whole stream; a stream cut short by its length
  gets one too, whose action the policy's `too_long_action` sets (block, the default, stops it);
- observe mode: observed decisions allow, and the same debounce, run over what enforcement would
  have done, records where the stream would have been stopped (`would_stop_token`) and each
  verdict's `would_action`; an observed stream is never stopped.
"""

from __future__ import annotations

from guardstream.schemas import (Action, Message, Moderate, RiskLevel, Role, StreamPosition, TokenChunkEvent, VerdictEvent,
                                 content_digest, derive_id, verdict_id)
from guardstream.workers.engines.messages import StreamAnswer, TokenVerdict
from guardstream.wire.policy import TenantPolicy, most_severe
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_sequence import Ready
from guardstream.workers.moderation.stream_state import StreamState

_SEVERITY = {"Safe": 0, "Controversial": 1, "Unsafe": 2, "Error": 3}


class StreamJudge:
    def __init__(self, rules: StreamRules, model_id: str):
        self.rules, self.model_id = rules, model_id

    def _policy(self, state: StreamState) -> TenantPolicy:
        """The stream's tenant's policy, for the stream's language (its first chunk's, or its prompt's)."""
        return self.rules.policies.for_tenant(state.tenant).for_language(state.language)

    def verdicts(self, r: Ready, answer: StreamAnswer, failure: str | None, latency_ms: float) -> list[VerdictEvent]:
        """The verdicts of one stream's ready chunks, from the model's answer for them (or a failure)."""
        state, policy = r.state, self._policy(r.state)
        out = []
        common = dict(conversation_id=r.ref.conversation, tenant=state.tenant, model_id=self.model_id,
                      model_variant="stream", policy=policy.describe(state.tenant),
                      policy_version=self.rules.policies.version(state.tenant), latency_ms=latency_ms,
                      reply_to=state.reply_to, nonce=state.nonce, language=state.language)
        if answer.query is not None and not state.opened:
            out.append(self._prompt_verdict(r, answer.query, common))
        state.opened = state.opened or failure is None
        tokens = iter(answer.tokens)
        for chunk, ids in zip(r.chunks, r.ids):
            offset = state.token_count
            judged = [next(tokens) for _ in ids] if failure is None else []
            stopped_before, would_stopped_before = state.stop_token is not None, _would_stop(state) is not None
            worst: TokenVerdict | None = None
            review = would_review = observed = False
            for index, token in enumerate(judged, start=offset):
                unsafe = token.label == "Unsafe" or (token.label == "Controversial" and policy.strict)
                decision = policy.decide(RiskLevel(token.label), [token.category] if token.category != "None" else [],
                                         token.probabilities)
                would = decision.would_action or decision.action
                review, would_review = review or decision.action is Action.review, would_review or would is Action.review
                observed = observed or decision.observed
                # only block and stop count toward the stop; what would have been done, toward the would-stop
                state.unsafe_run = state.unsafe_run + 1 if decision.action in (Action.block, Action.stop) else 0
                state.would_run = state.would_run + 1 if would in (Action.block, Action.stop) else 0
                if unsafe and state.first_unsafe is None:
                    state.first_unsafe, state.category = index, token.category
                if state.unsafe_run >= self.rules.debounce and state.stop_token is None:
                    state.stop_token = index
                if state.would_run >= self.rules.debounce and _would_stop(state) is None:
                    state.would_stop = index
                if worst is None or _SEVERITY[token.label] > _SEVERITY[worst.label]:
                    worst = token
            state.token_count += len(ids)
            judged_content = _digest(chunk)
            state.digest = content_digest(state.digest, judged_content)
            risk = RiskLevel.error if failure else RiskLevel(worst.label) if worst else RiskLevel.safe
            state.worst = max(state.worst, risk.value, key=_SEVERITY.__getitem__)
            if failure:
                decision = policy.decide(RiskLevel.error, [])
                action, observed = decision.action, decision.observed
                if action is Action.block and not stopped_before:
                    action, state.stop_token = Action.stop, offset  # fail closed: stop the stream once
                if decision.would_action is Action.block and _would_stop(state) is None:
                    state.would_stop = offset
            else:
                action = _action(stopped_before, state.stop_token, review)
            would = _action(would_stopped_before, _would_stop(state), would_review or review)
            observed = observed or state.would_stop is not None
            state.reviewed, state.would_review = state.reviewed or action is Action.review, \
                state.would_review or would is Action.review
            state.observed = state.observed or observed
            categories = [worst.category] if worst and risk is not RiskLevel.safe and worst.category != "None" else []
            out.append(VerdictEvent(
                verdict_id=verdict_id(state.tenant, r.ref.conversation, chunk.event_id, self.model_id, Moderate.response,
                                      judged_content, common["policy_version"]),
                source_event_id=chunk.event_id,
                moderate=Moderate.response, risk_level=risk, categories=categories,
                probabilities=worst.probabilities if worst else None, action=action, error=failure,
                observed=observed, would_action=would if observed else None,
                stream=StreamPosition(stream_id=r.ref.stream, seq=chunk.seq, token_offset=offset, token_count=len(ids),
                                      first_unsafe_token=state.first_unsafe, stop_token=state.stop_token,
                                      would_stop_token=state.would_stop), **common))
            if chunk.final:
                out.append(self._final(r, chunk.event_id, failure, common))
        if r.too_long:
            out.append(self._final(r, *r.too_long, common))
        return out

    def _prompt_verdict(self, r: Ready, query: TokenVerdict, common: dict) -> VerdictEvent:
        """The user turn's verdict, read at its closing <|im_end|> when the session opened."""
        policy = self._policy(r.state)
        risk = RiskLevel(query.label)
        categories = [query.category] if risk is not RiskLevel.safe and query.category != "None" else []
        decision = policy.decide(risk, categories, query.probabilities)
        reviewed = decision.action is Action.review and policy.review.store_text  # its text for the reviewers
        return VerdictEvent(verdict_id=verdict_id(r.state.tenant, r.ref.conversation, r.chunks[0].event_id, self.model_id,
                                                  Moderate.prompt, _digest(r.chunks[0]), common["policy_version"]),
                            source_event_id=r.chunks[0].event_id, moderate=Moderate.prompt, risk_level=risk,
                            categories=categories, probabilities=query.probabilities, action=decision.action,
                            observed=decision.observed, would_action=decision.would_action,
                            conversation=[Message(role=Role.user, content=r.chunks[0].prompt)] if reviewed else None,
                            stream=StreamPosition(stream_id=r.ref.stream, seq=r.chunks[0].seq, token_offset=0,
                                                  token_count=0), **common)

    def _final(self, r: Ready, event_id: str, error: str | None, common: dict) -> VerdictEvent:
        """The verdict for the whole stream. One cut short by its length is never allowed silently:
        the policy's `too_long_action` applies, and block stops a stream that was not stopped
        (observe mode: would have)."""
        state, policy = r.state, self._policy(r.state)
        action = _final_action(state.stop_token, state.reviewed)
        would = _final_action(_would_stop(state), state.would_review or state.reviewed)
        if r.too_long:
            decision = policy.observing(policy.too_long_action)
            if decision.action in (Action.block, Action.stop) and state.stop_token is None:
                action, state.stop_token = Action.stop, state.token_count
            else:
                action = most_severe(action, decision.action)
            if not decision.observed:
                would = most_severe(would, action)
            elif decision.would_action in (Action.block, Action.stop) and _would_stop(state) is None:
                would, state.would_stop, state.observed = Action.stop, state.token_count, True
            else:
                would, state.observed = most_severe(would, decision.would_action), True
        final = VerdictEvent(
            verdict_id=derive_id("stream-final", state.tenant, r.ref.conversation, r.ref.stream, self.model_id, state.digest,
                                 common["policy_version"] or ""),
            source_event_id=event_id, moderate=Moderate.response,
            risk_level=RiskLevel(state.worst), categories=[state.category] if state.category not in (None, "None") else [],
            action=action, error=error, observed=state.observed, would_action=would if state.observed else None,
            stream=StreamPosition(stream_id=r.ref.stream, seq=None, token_offset=0, token_count=state.token_count,
                                  first_unsafe_token=state.first_unsafe, stop_token=state.stop_token,
                                  would_stop_token=state.would_stop, final=True), **common)
        state.pending_text = ""  # finished: only seq bookkeeping is still needed
        return final


def _digest(chunk: TokenChunkEvent) -> str:
    """What a chunk gave to judge: its prompt (chunk 0) and its piece of the reply."""
    return content_digest(chunk.prompt, chunk.token_ids, chunk.text_delta, chunk.final)


def _would_stop(state) -> int | None:
    """Where enforcement would have stopped the stream: where it did, or where observe mode would have."""
    return state.stop_token if state.stop_token is not None else state.would_stop


def _final_action(stop_token: int | None, reviewed: bool) -> Action:
    return Action.block if stop_token is not None else Action.review if reviewed else Action.allow


def _action(stopped_before: bool, stop_token: int | None, review: bool) -> Action:
    """A chunk's action: block after the stop, stop on the chunk where it tripped, else review or allow."""
    return Action.block if stopped_before else Action.stop if stop_token is not None else \
        Action.review if review else Action.allow

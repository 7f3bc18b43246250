"""The Gen path's one step: a micro-batch of raw conversation records → verdicts and dead letters."""

from __future__ import annotations

import asyncio
import logging
import time

from guardstream.schemas import Action, ConversationEvent, DeadLetter, RiskLevel, VerdictEvent, content_digest, verdict_id
from guardstream.schemas.intake import RawRecord, decode
from guardstream.workers.engines.messages import GenRequest, GenResult
from guardstream.workers.moderation.language import event_languages
from guardstream.workers.moderation.rules import GenRules
from guardstream.workers.pools.unavailable import GenUnavailable

log = logging.getLogger(__name__)


class GenModerator:
    def __init__(self, rules: GenRules, pool, model_id: str):
        self.rules = rules
        self.pool = pool
        self.model_id = model_id

    async def moderate(self, records: list[RawRecord]) -> tuple[list[VerdictEvent], list[DeadLetter]]:
        decoded = [decode(r, ConversationEvent, self.rules.max_event_bytes) for r in records]
        events = [d for d in decoded if isinstance(d, ConversationEvent)]
        dead = [d for d in decoded if isinstance(d, DeadLetter)]
        # the languages are told (a ms or so each, in a thread) while the pool judges the events
        languages, (results, failure, latency_ms) = await asyncio.gather(
            asyncio.to_thread(self._languages, events), self._judged(events))
        return [self._verdict(e, r, failure, latency_ms, language)
                for e, r, language in zip(events, results, languages)], dead

    async def _judged(self, events: list[ConversationEvent]) -> tuple[list[GenResult | None], str | None, float]:
        """The pool's results, or none and why (the fail modes then decide), and how long it took."""
        began = time.perf_counter()
        try:
            results = await self.pool.classify(
                [GenRequest([m.model_dump(mode="json") for m in e.messages], e.moderate) for e in events])
            failure = None
        except GenUnavailable as exc:
            log.error("Gen pool unavailable for %d events, applying fail modes: %s", len(events), exc)
            results, failure = [None] * len(events), f"gen pool unavailable: {exc}"
        return results, failure, (time.perf_counter() - began) * 1000

    def _languages(self, events: list[ConversationEvent]) -> list[str | None]:
        return event_languages([(e.language, e.messages[-1].content) for e in events], self.rules.detector)

    def _error(self, result: GenResult | None) -> str | None:
        """The model's error; what it wrote only where text is stored (it may repeat the moderated text)."""
        if result is None or result.error is None:
            return None
        shown = f"; its output: {result.raw_output[:200]!r}" if self.rules.store_text and result.raw_output else ""
        return result.error + shown

    def _verdict(self, event: ConversationEvent, result: GenResult | None, failure: str | None,
                 latency_ms: float, language: str | None) -> VerdictEvent:
        policy = self.rules.policies.for_tenant(event.tenant).for_language(language)
        version = self.rules.policies.version(event.tenant)
        judgement = result.judgement if result else None
        risk = judgement.risk_level if judgement else RiskLevel.error
        categories = judgement.categories if judgement else []
        probabilities = result.probabilities if result else None
        decision = policy.observing(policy.too_long_action) if result and result.too_long else \
            policy.decide(policy.thresholded(risk, probabilities), categories, probabilities)
        judged = content_digest(event.moderate.value, [m.model_dump(mode="json") for m in event.messages])
        return VerdictEvent(
            verdict_id=verdict_id(event.tenant, event.conversation_id, event.event_id, self.model_id, event.moderate,
                                  judged, version),
            source_event_id=event.event_id, conversation_id=event.conversation_id, tenant=event.tenant,
            moderate=event.moderate, model_id=self.model_id, model_variant="gen", risk_level=risk,
            categories=categories, refusal=judgement.refusal if judgement else None,
            probabilities=probabilities, language=language, action=decision.action, observed=decision.observed,
            would_action=decision.would_action,
            policy=policy.describe(event.tenant), policy_version=version,
            error=failure or self._error(result), latency_ms=latency_ms,
            excerpt=event.messages[-1].content if self.rules.store_text else None,
            conversation=event.messages if decision.action is Action.review and policy.review.store_text else None,
            reply_to=event.reply_to,
            nonce=event.nonce,
        )

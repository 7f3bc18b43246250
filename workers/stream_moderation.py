"""The Stream path's one step: a micro-batch of chunk records → chunk verdicts and dead letters.

Per stream it keeps (in `StreamState`, stored by the agent in a Faust table) what is needed to
judge the next chunk and to rebuild the session on another actor: the prompt, the reply tokens
so far, the next expected `seq`, chunks held back behind a gap, and the debounce counter.

- a chunk with seq < next is a duplicate and is dropped (its verdict already exists);
- a chunk with seq > next waits for the missing ones; after `gap_timeout_s` the gap is reported
  to the dead-letter topic and the stream continues with what it has;
- the tenant's policy judges each token as Gen's verdicts are judged (mode, per-category actions,
  `unsafe_action`, review thresholds): `debounce` consecutive tokens it would block trip one
  `stop` action per stream, and chunks after it are `block`ed; a token it sends to review makes
  its chunk (and the stream's final verdict) `review`;
- the final chunk also yields a verdict for the whole stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from guardstream.schemas import (
    Action, DeadLetter, Moderate, RiskLevel, StreamPosition, TokenChunkEvent, VerdictEvent, derive_id, verdict_id,
)
from guardstream.topology.settings import Settings
from guardstream.workers.intake import RawRecord, dead_letter, decode
from guardstream.workers.retokenize import IncrementalTokenizer
from guardstream.workers.stream_engine import TokenVerdict
from guardstream.workers.stream_pool import StreamAnswer, StreamCall, StreamUnavailable

log = logging.getLogger(__name__)
_SEVERITY = {"Safe": 0, "Controversial": 1, "Unsafe": 2, "Error": 3}


class HeldChunk(BaseModel):
    event: dict
    topic: str
    partition: int
    offset: int


class StreamState(BaseModel):
    tenant: str
    prompt: str | None = None
    opened: bool = False
    next_seq: int = 0
    tokens: list[int] = Field(default_factory=list)
    pending_text: str = ""
    held: dict[int, HeldChunk] = Field(default_factory=dict)
    gap_since: float | None = None
    unsafe_run: int = 0
    first_unsafe: int | None = None
    category: str | None = None  # of the first unsafe token
    stop_token: int | None = None
    worst: str = "Safe"
    reviewed: bool = False  # a chunk went to review: so does the whole stream, unless it was stopped
    done: bool = False
    updated_at: float = 0.0  # wall time of its last chunk: finished and idle streams are forgotten after a while


def state_key(tenant: str, conversation_id: str) -> str:
    """Where a conversation's streams are kept: scoped by tenant, and no two pairs read alike."""
    return json.dumps([tenant, conversation_id])


def conversation_of(key: str) -> str:
    return json.loads(key)[1]


@dataclass
class _Ready:
    """Chunks of one stream that are next in line, in seq order, with the ids they add."""

    conversation_id: str
    stream_id: str
    state: StreamState
    chunks: list[TokenChunkEvent] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    too_long: tuple[str, str] | None = None  # (event id, reason): past stream_max_tokens, a final verdict says so


class StreamModerator:
    def __init__(self, settings: Settings, pool, tokenizer, model_id: str):
        self.settings, self.pool, self.tokenizer, self.model_id = settings, pool, tokenizer, model_id

    def prompt_ids(self, prompt: str) -> list[int]:
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def moderate(self, records: list[RawRecord], states: dict[str, dict[str, StreamState]],
                       load: Callable[[str], dict[str, StreamState]] = lambda c: {}, now: float | None = None
                       ) -> tuple[list[VerdictEvent], list[DeadLetter], dict[str, int]]:
        """Judge a batch. `states` maps a conversation's `state_key` → stream id → state, is filled
        by `load` for conversations not in it yet, and is updated in place; the returned dict names
        the conversations whose state changed, with the partition their chunks came from."""
        now = time.time() if now is None else now
        letters: list[DeadLetter] = []
        ready: dict[tuple[str, str, str], _Ready] = {}
        touched: dict[str, int] = {}
        for record in records:
            chunk = decode(record, TokenChunkEvent, self.settings.max_event_bytes)
            if isinstance(chunk, DeadLetter):
                letters.append(chunk)
                continue
            if chunk.token_ids and max(chunk.token_ids) >= len(self.tokenizer):
                letters.append(dead_letter(record, "stream_error", f"token id {max(chunk.token_ids)} is outside the "
                                                                   f"checkpoint's vocabulary of {len(self.tokenizer)}"))
                continue
            key = state_key(chunk.tenant, chunk.conversation_id)
            if key not in states:
                states[key] = load(key)
            streams = states[key]
            state = streams.get(chunk.stream_id) or StreamState(tenant=chunk.tenant)
            streams[chunk.stream_id] = state
            state.updated_at = now
            touched[key] = record.partition
            if state.done or chunk.seq < state.next_seq or chunk.seq in state.held:
                if state.done and chunk.seq >= state.next_seq:
                    letters.append(dead_letter(record, "stream_error", f"chunk {chunk.seq} of stream {chunk.stream_id} "
                                                                       f"arrived after its final chunk"))
                continue  # a duplicate: its verdict was produced when it first came
            state.held[chunk.seq] = HeldChunk(event=chunk.model_dump(mode="json"), topic=record.topic,
                                              partition=record.partition, offset=record.offset)
            state.gap_since = state.gap_since or now
        for key, streams in states.items():
            for stream_id, state in streams.items():
                if state.held:
                    touched.setdefault(key, next(iter(state.held.values())).partition)
                    letters += self._release(conversation_of(key), stream_id, state, ready, now)
        verdicts = await self._judge(list(ready.values())) if ready else []
        return verdicts, letters, touched

    def _release(self, conversation_id: str, stream_id: str, state: StreamState, ready: dict, now: float) -> list[DeadLetter]:
        """Move the chunks that are next in line from `held` to `ready`; report a gap that waited too long."""
        letters = []
        while state.held and not state.done:
            if state.next_seq not in state.held:
                if now - (state.gap_since or now) < self.settings.stream_gap_timeout_s:
                    break
                first = min(state.held)
                held = state.held[first]
                letters.append(self.held_letter(conversation_id, held, "sequence_gap",
                                                 f"stream {stream_id}: chunks {state.next_seq}..{first - 1} never arrived "
                                                 f"within {self.settings.stream_gap_timeout_s:.0f}s; continuing from chunk {first}"))
                state.next_seq = first
            held = state.held.pop(state.next_seq)
            chunk = TokenChunkEvent.model_validate(held.event)
            state.next_seq += 1
            entry = ready.setdefault((state.tenant, conversation_id, stream_id), _Ready(conversation_id, stream_id, state))
            ids = self._chunk_ids(state, chunk)
            judged = len(state.tokens) + sum(map(len, entry.ids))
            if judged + len(ids) > self.settings.stream_max_tokens:
                reason = (f"stream too long: chunk {chunk.seq} passes stream_max_tokens "
                          f"({self.settings.stream_max_tokens}); judged up to reply token {judged}")
                entry.too_long = (chunk.event_id, reason)
                letters.append(self.held_letter(conversation_id, held, "stream_error", f"stream {stream_id}: {reason}"))
                state.done = True
                break
            entry.chunks.append(chunk)
            entry.ids.append(ids)
            if chunk.prompt is not None:
                state.prompt = chunk.prompt
            if chunk.final:
                state.done = True
                break
        if state.done:  # chunks numbered past the final one can never be judged
            letters += [self.held_letter(conversation_id, held, "stream_error",
                                          f"chunk {seq} of stream {stream_id} is numbered after its final chunk")
                        for seq, held in sorted(state.held.items())]
            state.held.clear()
        state.gap_since = now if state.held else None
        return letters

    def _final(self, r: _Ready, event_id: str, error: str | None, common: dict) -> VerdictEvent:
        """The verdict for the whole stream; a stream cut short by its length is never allowed silently."""
        state = r.state
        action = Action.block if state.stop_token is not None else \
            Action.review if state.reviewed or r.too_long else Action.allow
        final = VerdictEvent(
            verdict_id=derive_id("stream-final", state.tenant, r.conversation_id, r.stream_id, self.model_id),
            source_event_id=event_id, moderate=Moderate.response,
            risk_level=RiskLevel(state.worst), categories=[state.category] if state.category not in (None, "None") else [],
            action=action, error=error, stream=StreamPosition(
                stream_id=r.stream_id, seq=None, token_offset=0, token_count=len(state.tokens),
                first_unsafe_token=state.first_unsafe, stop_token=state.stop_token, final=True), **common)
        state.tokens, state.pending_text = [], ""  # finished: only seq bookkeeping is still needed
        return final

    @staticmethod
    def held_letter(conversation_id: str, held: HeldChunk, code: str, error: str) -> DeadLetter:
        raw = json.dumps(held.event)
        return DeadLetter(topic=held.topic, partition=held.partition, offset=held.offset, key=conversation_id,
                          raw_value=raw[:2048], raw_size=len(raw), error_code=code, error=error)

    def _chunk_ids(self, state: StreamState, chunk: TokenChunkEvent) -> list[int]:
        if chunk.token_ids is not None:
            return list(chunk.token_ids)
        incremental = IncrementalTokenizer(self.tokenizer, state.pending_text)
        ids = incremental.push(chunk.text_delta) + (incremental.finish() if chunk.final else [])
        state.pending_text = incremental.pending
        return ids

    async def _judge(self, ready: list[_Ready]) -> list[VerdictEvent]:
        def call(r: _Ready, rebuild: bool) -> StreamCall:
            new = [i for ids in r.ids for i in ids]
            reopen = rebuild or not r.state.opened
            return StreamCall(session=json.dumps([r.state.tenant, r.conversation_id, r.stream_id]), new_ids=new,
                              prompt_ids=self.prompt_ids(r.state.prompt or "") if reopen else None,
                              history_ids=list(r.state.tokens) if rebuild else [], close=r.state.done,
                              judged=len(r.state.tokens))

        began = time.perf_counter()
        try:
            answers = await self.pool.step([call(r, rebuild=False) for r in ready])
            lost = [i for i, a in enumerate(answers) if a.missing]
            if lost:
                log.info("rebuilding %d stream sessions on their actors (actor restarted or evicted them)", len(lost))
                for i, answer in zip(lost, await self.pool.step([call(ready[i], rebuild=True) for i in lost])):
                    answers[i] = answer
            failure = None
        except StreamUnavailable as exc:
            log.error("Stream pool unavailable for %d streams, applying fail modes: %s", len(ready), exc)
            answers, failure = [StreamAnswer("", missing=True) for _ in ready], f"stream pool unavailable: {exc}"
        latency_ms = (time.perf_counter() - began) * 1000
        verdicts = []
        for r, answer in zip(ready, answers):  # an engine error on one session fails only that stream
            verdicts += self._verdicts(r, answer, failure or answer.error, latency_ms)
        return verdicts

    def _verdicts(self, r: _Ready, answer: StreamAnswer, failure: str | None, latency_ms: float) -> list[VerdictEvent]:
        state, policy = r.state, self.settings.policy.for_tenant(r.state.tenant)
        out = []
        common = dict(conversation_id=r.conversation_id, tenant=state.tenant, model_id=self.model_id,
                      model_variant="stream", policy=policy.describe(state.tenant), latency_ms=latency_ms)
        if answer.query is not None and not state.opened:
            q = answer.query
            risk = RiskLevel(q.label)
            categories = [q.category] if risk is not RiskLevel.safe and q.category != "None" else []
            out.append(VerdictEvent(verdict_id=verdict_id(state.tenant, r.conversation_id, r.chunks[0].event_id, self.model_id,
                                                           Moderate.prompt),
                                    source_event_id=r.chunks[0].event_id, moderate=Moderate.prompt, risk_level=risk,
                                    categories=categories, probabilities=q.probabilities,
                                    action=policy.decide(risk, categories, q.probabilities),
                                    stream=StreamPosition(stream_id=r.stream_id, seq=r.chunks[0].seq, token_offset=0,
                                                          token_count=0), **common))
        state.opened = state.opened or failure is None
        tokens = iter(answer.tokens)
        for chunk, ids in zip(r.chunks, r.ids):
            offset = len(state.tokens)
            judged = [next(tokens) for _ in ids] if failure is None else []
            stopped_before = state.stop_token is not None
            worst: TokenVerdict | None = None
            review = False
            for index, token in enumerate(judged, start=offset):
                unsafe = token.label == "Unsafe" or (token.label == "Controversial" and policy.mode == "strict")
                decision = policy.decide(RiskLevel(token.label), [token.category] if token.category != "None" else [],
                                         token.probabilities)
                blocking = decision in (Action.block, Action.stop)  # only these count toward the stop
                review = review or decision is Action.review
                state.unsafe_run = state.unsafe_run + 1 if blocking else 0
                if unsafe and state.first_unsafe is None:
                    state.first_unsafe, state.category = index, token.category
                if state.unsafe_run >= self.settings.stream_debounce and state.stop_token is None:
                    state.stop_token = index
                if worst is None or _SEVERITY[token.label] > _SEVERITY[worst.label]:
                    worst = token
            state.tokens += ids
            risk = RiskLevel.error if failure else RiskLevel(worst.label) if worst else RiskLevel.safe
            state.worst = max(state.worst, risk.value, key=_SEVERITY.__getitem__)
            if failure:
                action = policy.decide(RiskLevel.error, [])
                if action is Action.block and not stopped_before:
                    action, state.stop_token = Action.stop, offset  # fail closed: stop the stream once
            else:
                action = (Action.block if stopped_before else Action.stop if state.stop_token is not None
                          else Action.review if review else Action.allow)
            state.reviewed = state.reviewed or action is Action.review
            categories = [worst.category] if worst and risk is not RiskLevel.safe and worst.category != "None" else []
            out.append(VerdictEvent(
                verdict_id=verdict_id(state.tenant, r.conversation_id, chunk.event_id, self.model_id, Moderate.response),
                source_event_id=chunk.event_id,
                moderate=Moderate.response, risk_level=risk, categories=categories,
                probabilities=worst.probabilities if worst else None, action=action, error=failure,
                stream=StreamPosition(stream_id=r.stream_id, seq=chunk.seq, token_offset=offset, token_count=len(ids),
                                      first_unsafe_token=state.first_unsafe, stop_token=state.stop_token), **common))
            if chunk.final:
                out.append(self._final(r, chunk.event_id, failure, common))
        if r.too_long:
            out.append(self._final(r, *r.too_long, common))
        return out

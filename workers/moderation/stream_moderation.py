"""The Stream path's one step: a micro-batch of chunk records → chunk verdicts and dead letters.

Per stream it keeps (`workers/moderation/stream_state.py`, stored by the agent in a Faust table) what is
needed to judge the next chunk and to rebuild the session on another actor: the prompt, the ids
each chunk added, the next expected `seq`, chunks held back behind a gap, the debounce counter.

- a chunk with seq < next is a duplicate and is dropped (its verdict already exists), unless its
  gap was reported: then it is a dead letter, since it was never judged;
- a chunk with seq > next waits for the missing ones (at most `stream_max_held_chunks` ahead);
  after `gap_timeout_s` the gap is reported to the dead-letter topic and the stream goes on;
- the tenant's policy judges each token as Gen's verdicts are judged (mode, per-category actions,
  `unsafe_action`, review thresholds): `debounce` consecutive tokens it would block trip one
  `stop` action per stream, and chunks after it are `block`ed; a token it sends to review makes
  its chunk (and the stream's final verdict) `review`;
- a stream is judged up to `stream_max_tokens` reply tokens, and no further than the model's
  positions allow after its prompt; the chunk that passes the limit is a dead letter and the
  stream ends with a final verdict that says so, whose action the policy's `too_long_action` sets
  (block, the default, stops a stream that was not stopped yet);
- the final chunk also yields a verdict for the whole stream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from guardstream.schemas import (
    Action, DeadLetter, Moderate, RiskLevel, StreamPosition, TokenChunkEvent, VerdictEvent, derive_id, verdict_id,
)
from guardstream.schemas.intake import RawRecord, dead_letter, decode
from guardstream.workers.engines.framing import reply_prefix_ids
from guardstream.workers.engines.retokenize import IncrementalTokenizer
from guardstream.workers.engines.stream_engine import TokenVerdict
from guardstream.workers.moderation.policy import most_severe
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_state import HeldChunk, Staged, StreamRef, StreamState
from guardstream.workers.pools.stream_pool import StreamAnswer, StreamCall, StreamUnavailable

log = logging.getLogger(__name__)
_SKIPPED_KEPT = 8  # gaps a stream remembers, to dead-letter a chunk that turns up after its gap was reported
_SEVERITY = {"Safe": 0, "Controversial": 1, "Unsafe": 2, "Error": 3}


@dataclass
class _Ready:
    """Chunks of one stream that are next in line, in seq order, with the ids they add."""

    ref: StreamRef
    state: StreamState
    chunks: list[TokenChunkEvent] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    too_long: tuple[str, str] | None = None  # (event id, reason): past its limit, a final verdict says so
    prompt_ids: list[int] | None = None  # templated once, when a chunk of this batch brought the prompt


class StreamModerator:
    def __init__(self, rules: StreamRules, pool, tokenizer, model_id: str,
                 on_rebuild: Callable[[int], object] = lambda count: None):
        """`on_rebuild(n)` hears of each step that had to rebuild n sessions (a metric, in the worker)."""
        self.rules, self.pool, self.tokenizer, self.model_id = rules, pool, tokenizer, model_id
        self.on_rebuild = on_rebuild

    def prompt_ids(self, prompt: str) -> list[int]:
        return reply_prefix_ids(self.tokenizer, prompt)

    async def moderate(self, records: list[RawRecord], store: Staged, release: Iterable[StreamRef] = (),
                       now: float | None = None, waits_from: float = 0.0) -> tuple[list[VerdictEvent], list[DeadLetter]]:
        """Judge a batch, and release what waits in the streams `release` names. Reads and writes
        go through `store`; the caller applies its writes once the verdicts are delivered.

        A gap's wait counts from when the stream started waiting for that chunk, but never from
        before `waits_from`: a worker that took the partition over sets it to when it did, since
        the replay from the committed offset may still bring the missing chunk."""
        now = time.time() if now is None else now
        letters: list[DeadLetter] = []
        states: dict[StreamRef, StreamState] = {}
        stored: dict[StreamRef, dict | None] = {}  # as loaded: a state written back only when it changed
        parsed: dict[str, TokenChunkEvent] = {}  # held key → the chunk decoded from this batch's record
        for record in records:
            chunk = decode(record, TokenChunkEvent, self.rules.max_event_bytes)
            if isinstance(chunk, DeadLetter):
                letters.append(chunk)
                continue
            if chunk.token_ids and max(chunk.token_ids) >= len(self.tokenizer):
                letters.append(dead_letter(record, "stream_error", f"token id {max(chunk.token_ids)} is outside the "
                                                                   f"checkpoint's vocabulary of {len(self.tokenizer)}"))
                continue
            ref = StreamRef(chunk.tenant, chunk.conversation_id, chunk.stream_id)
            if ref not in states:
                stored[ref] = store.get(ref.key())
                states[ref] = StreamState.model_validate(stored[ref]) if stored[ref] else \
                    StreamState(tenant=chunk.tenant, partition=record.partition)
            state = states[ref]
            state.updated_at = now
            if state.done or chunk.seq < state.next_seq or chunk.seq in state.held:
                if state.done and chunk.seq >= state.next_seq:
                    letters.append(dead_letter(record, "stream_error", f"chunk {chunk.seq} of stream {chunk.stream_id} "
                                                                       f"arrived after its final chunk"))
                elif state.passed_over(chunk.seq):
                    letters.append(dead_letter(record, "sequence_gap", f"chunk {chunk.seq} of stream {chunk.stream_id} "
                                                                       f"arrived after its gap was reported; not judged"))
                continue  # a duplicate: its verdict was produced when it first came
            ahead = self.rules.max_held_chunks
            if chunk.seq >= state.next_seq + ahead:
                letters.append(dead_letter(record, "stream_error", f"chunk {chunk.seq} of stream {chunk.stream_id} is "
                                                                   f"{ahead} or more ahead of chunk {state.next_seq}, the "
                                                                   f"next expected (stream_max_held_chunks)"))
                continue
            parsed[ref.held_key(chunk.seq)] = chunk
            store.put(state.partition, ref.held_key(chunk.seq), HeldChunk(
                event=chunk.model_dump(mode="json"), topic=record.topic, partition=record.partition,
                offset=record.offset).model_dump(mode="json"))
            state.held = sorted([*state.held, chunk.seq])
            state.gap_since = state.gap_since or now
        for ref in release:
            if ref not in states and (value := store.get(ref.key())) is not None:
                stored[ref], states[ref] = value, StreamState.model_validate(value)
        ready: dict[StreamRef, _Ready] = {}
        for ref, state in states.items():
            if state.held:
                letters += self._release(ref, state, store, ready, now, parsed, waits_from)
        verdicts = await self._judge(list(ready.values()), store) if ready else []
        for ref, state in states.items():  # a timer's check that released nothing writes nothing
            if (value := state.model_dump(mode="json")) != stored[ref]:
                store.put(state.partition, ref.key(), value)
        return verdicts, letters

    def _release(self, ref: StreamRef, state: StreamState, store: Staged, ready: dict, now: float,
                 parsed: dict[str, TokenChunkEvent], waits_from: float) -> list[DeadLetter]:
        """Move the chunks that are next in line from `held` to `ready`; report a gap that waited too long.
        A chunk held by an earlier batch is read back from its entry; one from this batch is not parsed again."""
        letters, waiting_for = [], state.next_seq
        while state.held and not state.done:
            if state.next_seq not in state.held:
                if now - max(state.gap_since or now, waits_from) < self.rules.gap_timeout_s:
                    break
                first = state.held[0]
                letters += self._held_letters(ref, store, [first], "sequence_gap", lambda _: (
                    f"stream {ref.stream}: chunks {state.next_seq}..{first - 1} never arrived within "
                    f"{self.rules.gap_timeout_s:.0f}s; continuing from chunk {first}"), keep=True)
                state.skipped = [*state.skipped, (state.next_seq, first - 1)][-_SKIPPED_KEPT:]
                state.next_seq = first
            seq = state.next_seq
            held = HeldChunk.model_validate(store.get(ref.held_key(seq)))
            store.delete(ref.held_key(seq))
            state.held.remove(seq)
            chunk = parsed.get(ref.held_key(seq)) or TokenChunkEvent.model_validate(held.event)
            state.next_seq += 1
            entry = ready.setdefault(ref, _Ready(ref, state))
            if chunk.prompt is not None:
                store.put(state.partition, ref.prompt_key(), chunk.prompt)
                entry.prompt_ids = self.prompt_ids(chunk.prompt)
                state.prompt_tokens = len(entry.prompt_ids)
            ids = self._chunk_ids(state, chunk)
            judged = state.token_count + sum(map(len, entry.ids))
            room = self.pool.max_positions - state.prompt_tokens
            if judged + len(ids) > min(self.rules.max_tokens, room):
                limit = (f"stream_max_tokens ({self.rules.max_tokens})" if self.rules.max_tokens <= room
                         else f"the model's {self.pool.max_positions} positions less the prompt's {state.prompt_tokens}")
                reason = f"stream too long: chunk {chunk.seq} passes {limit}; judged up to reply token {judged}"
                entry.too_long = (chunk.event_id, reason)
                letters.append(held.letter(ref.conversation, "stream_error", f"stream {ref.stream}: {reason}"))
                state.done = True
                break
            entry.chunks.append(chunk)
            entry.ids.append(ids)
            if chunk.final:
                state.done = True
                break
        if state.done:  # chunks numbered past the final one can never be judged
            letters += self._held_letters(ref, store, state.held, "stream_error",
                                          lambda seq: f"chunk {seq} of stream {ref.stream} is numbered after its final chunk")
            state.held = []
        if not state.held:
            state.gap_since = None
        elif state.gap_since is None or state.next_seq != waiting_for:  # now waiting for another chunk
            state.gap_since = now
        return letters

    def drop_held(self, store: Staged, ref: StreamRef, reason: str) -> list[DeadLetter]:
        """The chunks a stream holds become dead letters (their release failed for good); it goes on."""
        state = store.state(ref)
        if state is None:
            return []
        letters = self._held_letters(ref, store, state.held, "processing_failed",
                                     lambda seq: f"stream {ref.stream}: releasing chunk {seq} failed: {reason}")
        state.held, state.gap_since = [], None
        store.put(state.partition, ref.key(), state.model_dump(mode="json"))
        return letters

    def _held_letters(self, ref: StreamRef, store: Staged, seqs: list[int], code: str, why, keep: bool = False
                      ) -> list[DeadLetter]:
        letters = []
        for seq in list(seqs):
            held = store.get(ref.held_key(seq))
            if held is not None:
                letters.append(HeldChunk.model_validate(held).letter(ref.conversation, code, why(seq)))
            if not keep:
                store.delete(ref.held_key(seq))
        return letters

    def _final(self, r: _Ready, event_id: str, error: str | None, common: dict) -> VerdictEvent:
        """The verdict for the whole stream. One cut short by its length is never allowed silently:
        the policy's `too_long_action` applies, and block stops a stream that was not stopped."""
        state, policy = r.state, self.rules.policy.for_tenant(r.state.tenant)
        action = Action.block if state.stop_token is not None else Action.review if state.reviewed else Action.allow
        if r.too_long:
            if policy.too_long_action in (Action.block, Action.stop) and state.stop_token is None:
                action, state.stop_token = Action.stop, state.token_count
            else:
                action = most_severe(action, policy.too_long_action)
        final = VerdictEvent(
            verdict_id=derive_id("stream-final", state.tenant, r.ref.conversation, r.ref.stream, self.model_id),
            source_event_id=event_id, moderate=Moderate.response,
            risk_level=RiskLevel(state.worst), categories=[state.category] if state.category not in (None, "None") else [],
            action=action, error=error, stream=StreamPosition(
                stream_id=r.ref.stream, seq=None, token_offset=0, token_count=state.token_count,
                first_unsafe_token=state.first_unsafe, stop_token=state.stop_token, final=True), **common)
        state.pending_text = ""  # finished: only seq bookkeeping is still needed
        return final

    def _chunk_ids(self, state: StreamState, chunk: TokenChunkEvent) -> list[int]:
        if chunk.token_ids is not None:
            return list(chunk.token_ids)
        incremental = IncrementalTokenizer(self.tokenizer, state.pending_text)
        ids = incremental.push(chunk.text_delta) + (incremental.finish() if chunk.final else [])
        state.pending_text = incremental.pending
        return ids

    async def _judge(self, ready: list[_Ready], store: Staged) -> list[VerdictEvent]:
        def call(r: _Ready, rebuild: bool) -> StreamCall:
            history = [i for seq in range(r.chunks[0].seq) for i in store.get(r.ref.ids_key(seq)) or []] if rebuild else []
            reopen = rebuild or not r.state.opened
            prompt = (r.prompt_ids or self.prompt_ids(store.get(r.ref.prompt_key()) or "")) if reopen else None
            return StreamCall(session=json.dumps(list(r.ref)), new_ids=[i for ids in r.ids for i in ids], prompt_ids=prompt,
                              history_ids=history, close=r.state.done, judged=r.state.token_count)

        judged = [r for r in ready if r.chunks]  # a stream whose first chunk was already too long needs no model
        began = time.perf_counter()
        try:
            answers = await self.pool.step([call(r, rebuild=False) for r in judged]) if judged else []
            lost = [i for i, a in enumerate(answers) if a.missing]
            if lost:
                log.info("rebuilding %d stream sessions on their actors (lost by a restart or an eviction, or out of step)",
                         len(lost))
                self.on_rebuild(len(lost))
                for i, answer in zip(lost, await self.pool.step([call(judged[i], rebuild=True) for i in lost])):
                    answers[i] = answer
            failure = None
        except StreamUnavailable as exc:
            log.error("Stream pool unavailable for %d streams, applying fail modes: %s", len(judged), exc)
            answers, failure = [StreamAnswer("", missing=True) for _ in judged], f"stream pool unavailable: {exc}"
        latency_ms = (time.perf_counter() - began) * 1000
        by_stream = dict(zip((r.ref for r in judged), answers))
        verdicts = []
        for r in ready:  # an engine error on one session fails only that stream
            answer = by_stream.get(r.ref, StreamAnswer(""))
            verdicts += self._verdicts(r, answer, failure or answer.error, latency_ms, store)
        return verdicts

    def _verdicts(self, r: _Ready, answer: StreamAnswer, failure: str | None, latency_ms: float, store: Staged
                  ) -> list[VerdictEvent]:
        state, policy = r.state, self.rules.policy.for_tenant(r.state.tenant)
        out = []
        common = dict(conversation_id=r.ref.conversation, tenant=state.tenant, model_id=self.model_id,
                      model_variant="stream", policy=policy.describe(state.tenant), latency_ms=latency_ms)
        if answer.query is not None and not state.opened:
            q = answer.query
            risk = RiskLevel(q.label)
            categories = [q.category] if risk is not RiskLevel.safe and q.category != "None" else []
            out.append(VerdictEvent(verdict_id=verdict_id(state.tenant, r.ref.conversation, r.chunks[0].event_id, self.model_id,
                                                           Moderate.prompt),
                                    source_event_id=r.chunks[0].event_id, moderate=Moderate.prompt, risk_level=risk,
                                    categories=categories, probabilities=q.probabilities,
                                    action=policy.decide(risk, categories, q.probabilities),
                                    stream=StreamPosition(stream_id=r.ref.stream, seq=r.chunks[0].seq, token_offset=0,
                                                          token_count=0), **common))
        state.opened = state.opened or failure is None
        tokens = iter(answer.tokens)
        for chunk, ids in zip(r.chunks, r.ids):
            offset = state.token_count
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
                if state.unsafe_run >= self.rules.debounce and state.stop_token is None:
                    state.stop_token = index
                if worst is None or _SEVERITY[token.label] > _SEVERITY[worst.label]:
                    worst = token
            state.token_count += len(ids)
            if ids:
                store.put(state.partition, r.ref.ids_key(chunk.seq), ids)
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
                verdict_id=verdict_id(state.tenant, r.ref.conversation, chunk.event_id, self.model_id, Moderate.response),
                source_event_id=chunk.event_id,
                moderate=Moderate.response, risk_level=risk, categories=categories,
                probabilities=worst.probabilities if worst else None, action=action, error=failure,
                stream=StreamPosition(stream_id=r.ref.stream, seq=chunk.seq, token_offset=offset, token_count=len(ids),
                                      first_unsafe_token=state.first_unsafe, stop_token=state.stop_token), **common))
            if chunk.final:
                out.append(self._final(r, chunk.event_id, failure, common))
        if r.too_long:
            out.append(self._final(r, *r.too_long, common))
        if state.done:  # a finished stream is never rebuilt: its ids and prompt go now, its state after stream_idle_ttl_s
            for key in (r.ref.prompt_key(), *map(r.ref.ids_key, range(state.next_seq))):
                store.delete(key)
        return out

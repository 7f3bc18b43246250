"""The Stream path's bookkeeping: which chunks of which streams are next in line. No model, no policy.

Per stream it keeps (`stream_state.py`, stored by the agent in a Faust table) the next expected
`seq`, chunks held back behind a gap, the prompt and the ids each chunk added:

- a chunk with seq < next is a duplicate and is dropped (its verdict already exists), unless its
  gap was reported: then it is a dead letter, since it was never judged;
- a chunk with seq > next waits for the missing ones (at most `max_held_chunks` ahead); after
  `gap_timeout_s` the gap is reported to the dead-letter topic and the stream goes on;
- a stream is judged up to `max_tokens` reply tokens, and no further than the model's positions
  allow after its prompt; the chunk that passes the limit is a dead letter and ends the stream;
- chunks numbered past a stream's final chunk are dead letters;
- a finished stream's prompt and ids go (tombstones) once it is judged; its small state stays to
  recognise late duplicates until the agent forgets idle streams.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from guardstream.schemas import DeadLetter, TokenChunkEvent
from guardstream.schemas.intake import RawRecord, dead_letter, decode
from guardstream.workers.engines.framing import reply_prefix_ids
from guardstream.workers.engines.retokenize import IncrementalTokenizer
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_state import HeldChunk, Staged, StreamRef, StreamState

_SKIPPED_KEPT = 8  # gaps a stream remembers, to dead-letter a chunk that turns up after its gap was reported


@dataclass
class Ready:
    """Chunks of one stream that are next in line, in seq order, with the ids they add."""

    ref: StreamRef
    state: StreamState
    chunks: list[TokenChunkEvent] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    too_long: tuple[str, str] | None = None  # (event id, reason): past its limit, a final verdict says so
    prompt_ids: list[int] | None = None  # templated once, when a chunk of this batch brought the prompt
    untold: str | None = None  # the prompt whose language the detector is to tell (its first chunk named none)


@dataclass
class Taken:
    """One batch's outcome of sequencing: what to judge, what is dead, and the states to write back."""

    ready: list[Ready]
    letters: list[DeadLetter]
    states: dict[StreamRef, StreamState]
    stored: dict[StreamRef, dict | None]  # as loaded: a state is written back only when it changed


class StreamSequencer:
    def __init__(self, rules: StreamRules, tokenizer, max_positions: int):
        self.rules, self.tokenizer, self.max_positions = rules, tokenizer, max_positions

    def prompt_ids(self, prompt: str) -> list[int]:
        return reply_prefix_ids(self.tokenizer, prompt)

    def take(self, records: list[RawRecord], store: Staged, release: Iterable[StreamRef] = (), now: float | None = None,
             waits_from: float = 0.0) -> Taken:
        """Sequence a batch, and release what waits in the streams `release` names. Reads and writes
        go through `store`; the caller applies its writes once the verdicts are delivered.

        A gap's wait counts from when the stream started waiting for that chunk, but never from
        before `waits_from`: a worker that took the partition over sets it to when it did, since
        the replay from the committed offset may still bring the missing chunk."""
        now = time.time() if now is None else now
        taken = Taken([], [], {}, {})
        ready: dict[StreamRef, Ready] = {}
        parsed: dict[str, TokenChunkEvent] = {}  # held key → the chunk decoded from this batch's record
        for record in records:
            if (admitted := self._admit(record, store, taken, now)) is None:
                continue
            chunk, ref = admitted
            state = taken.states[ref]
            if chunk.seq == state.next_seq and not state.held:  # in order, nothing waiting: judged as it is
                letter = self._next_in_line(ref, state, chunk, store, ready,
                                            lambda code, why, record=record: dead_letter(record, code, why))
                taken.letters += [letter] if letter else []
                continue
            parsed[ref.held_key(chunk.seq)] = chunk
            store.put(state.partition, ref.held_key(chunk.seq), HeldChunk(
                event=chunk.model_dump(mode="json"), topic=record.topic, partition=record.partition,
                offset=record.offset).model_dump(mode="json"))
            state.held = sorted([*state.held, chunk.seq])
            state.gap_since = state.gap_since or now
        for ref in release:
            if ref not in taken.states and (value := store.get(ref.key())) is not None:
                taken.stored[ref], taken.states[ref] = value, StreamState.model_validate(value)
        for ref, state in taken.states.items():
            if state.held:
                taken.letters += self._release(ref, state, store, ready, now, parsed, waits_from)
        taken.ready = list(ready.values())
        return taken

    def _admit(self, record: RawRecord, store: Staged, taken: Taken, now: float) -> tuple[TokenChunkEvent, StreamRef] | None:
        """The chunk a record holds and its stream, when it is to wait for its turn; otherwise None,
        with its dead letter added (or nothing, for a duplicate)."""
        chunk = decode(record, TokenChunkEvent, self.rules.max_event_bytes)
        if isinstance(chunk, DeadLetter):
            taken.letters.append(chunk)
            return None
        if chunk.token_ids and max(chunk.token_ids) >= len(self.tokenizer):
            taken.letters.append(dead_letter(record, "stream_error", f"token id {max(chunk.token_ids)} is outside the "
                                                                     f"checkpoint's vocabulary of {len(self.tokenizer)}"))
            return None
        ref = StreamRef(chunk.tenant, chunk.conversation_id, chunk.stream_id)
        if ref not in taken.states:
            taken.stored[ref] = store.get(ref.key())
            taken.states[ref] = StreamState.model_validate(taken.stored[ref]) if taken.stored[ref] else \
                StreamState(tenant=chunk.tenant, partition=record.partition, nonce=chunk.nonce, reply_to=chunk.reply_to)
        state = taken.states[ref]
        if chunk.nonce != state.nonce:
            taken.letters.append(dead_letter(record, "stream_error", f"chunk {chunk.seq} of stream {chunk.stream_id} "
                                                                     f"does not carry the nonce of the stream's first "
                                                                     f"chunk: not judged, and the stream is unchanged"))
            return None
        state.updated_at = now
        if chunk.nonce is not None and chunk.reply_to is not None:  # only the owner, who knows the nonce, moves it
            state.reply_to = chunk.reply_to
        if state.done or chunk.seq < state.next_seq or chunk.seq in state.held:
            if state.done and chunk.seq >= state.next_seq:
                taken.letters.append(dead_letter(record, "stream_error", f"chunk {chunk.seq} of stream {chunk.stream_id} "
                                                                         f"arrived after its final chunk"))
            elif state.passed_over(chunk.seq):
                taken.letters.append(dead_letter(record, "sequence_gap", f"chunk {chunk.seq} of stream {chunk.stream_id} "
                                                                         f"arrived after its gap was reported; not judged"))
            return None  # a duplicate: its verdict was produced when it first came
        ahead = self.rules.max_held_chunks
        if chunk.seq >= state.next_seq + ahead:
            taken.letters.append(dead_letter(record, "stream_error", f"chunk {chunk.seq} of stream {chunk.stream_id} is "
                                                                     f"{ahead} or more ahead of chunk {state.next_seq}, the "
                                                                     f"next expected (stream_max_held_chunks)"))
            return None
        return chunk, ref

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
            letter = self._next_in_line(ref, state, chunk, store, ready,
                                        lambda code, why, held=held: held.letter(ref.conversation, code, why))
            letters += [letter] if letter else []
        if state.done:  # chunks numbered past the final one can never be judged
            letters += self._held_letters(ref, store, state.held, "stream_error",
                                          lambda seq: f"chunk {seq} of stream {ref.stream} is numbered after its final chunk")
            state.held = []
        if not state.held:
            state.gap_since = None
        elif state.gap_since is None or state.next_seq != waiting_for:  # now waiting for another chunk
            state.gap_since = now
        return letters

    def _next_in_line(self, ref: StreamRef, state: StreamState, chunk: TokenChunkEvent, store: Staged,
                      ready: dict[StreamRef, Ready], letter) -> DeadLetter | None:
        """The stream's next chunk, added to what this batch judges of it; a chunk past the stream's
        limit ends it instead, with its dead letter (made by `letter(code, error)`)."""
        state.next_seq += 1
        entry = ready.setdefault(ref, Ready(ref, state))
        if chunk.prompt is not None:
            state.language = chunk.language or None
            entry.untold = chunk.prompt if state.language is None and self.rules.detector is not None else None
            entry.prompt_ids = self.prompt_ids(chunk.prompt)
            store.put(state.partition, ref.prompt_key(), entry.prompt_ids)  # token ids, not the text
            state.prompt_tokens = len(entry.prompt_ids)
        ids = self._chunk_ids(state, chunk)
        judged = state.token_count + sum(map(len, entry.ids))
        room = self.max_positions - state.prompt_tokens
        if judged + len(ids) > min(self.rules.max_tokens, room):
            limit = (f"stream_max_tokens ({self.rules.max_tokens})" if self.rules.max_tokens <= room
                     else f"the model's {self.max_positions} positions less the prompt's {state.prompt_tokens}")
            reason = f"stream too long: chunk {chunk.seq} passes {limit}; judged up to reply token {judged}"
            entry.too_long = (chunk.event_id, reason)
            state.done = True
            return letter("stream_error", f"stream {ref.stream}: {reason}")
        entry.chunks.append(chunk)
        entry.ids.append(ids)
        state.done = chunk.final
        return None

    def _chunk_ids(self, state: StreamState, chunk: TokenChunkEvent) -> list[int]:
        if chunk.token_ids is not None:
            return list(chunk.token_ids)
        incremental = IncrementalTokenizer(self.tokenizer, state.pending_text)
        ids = incremental.push(chunk.text_delta) + (incremental.finish() if chunk.final else [])
        state.pending_text = incremental.pending
        return ids

    def reopening_prompt(self, store: Staged, ready: Ready) -> list[int]:
        """The templated prompt that (re)opens a stream's session: this batch's, or the stored one's."""
        stored = store.get(ready.ref.prompt_key())
        return ready.prompt_ids or (self.prompt_ids(stored) if isinstance(stored, str) else stored or [])  # text: an older worker's

    def judged_ids(self, store: Staged, ready: Ready) -> list[int]:
        """The reply ids judged before this batch, which rebuild a session its actor lost."""
        return [i for seq in range(ready.chunks[0].seq) for i in store.get(ready.ref.ids_key(seq)) or []]

    def settle(self, taken: Taken, store: Staged) -> None:
        """After judging: each chunk's ids are stored, a finished stream's prompt and ids are deleted
        (it is never rebuilt; its state stays until the agent forgets idle streams), and every state
        that changed is written back (a timer's check that released nothing writes nothing)."""
        for r in taken.ready:
            state = r.state
            for chunk, ids in zip(r.chunks, r.ids):
                if ids:
                    store.put(state.partition, r.ref.ids_key(chunk.seq), ids)
            if state.done:
                for key in (r.ref.prompt_key(), *map(r.ref.ids_key, range(state.next_seq))):
                    store.delete(key)
        for ref, state in taken.states.items():
            if (value := state.model_dump(mode="json")) != taken.stored[ref]:
                store.put(state.partition, ref.key(), value)

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

"""What the Stream path remembers of each stream, as small entries of a changelogged table.

A stream is kept as three kinds of entry, so that a chunk writes only what it adds (the
changelog grows with a stream's length, not with its square) and no value can outgrow a broker
message (each is bounded by `max_event_bytes`):
- `["state", tenant, conversation, stream]`: its `StreamState` (counters, held seqs), small and
  bounded, rewritten by each batch that touches the stream;
- `["prompt", tenant, conversation, stream]`: the templated prompt's token ids (not its text),
  written once, to reopen it;
- `["ids", tenant, conversation, stream, seq]`: the token ids chunk `seq` added, which rebuild
  the session when its actor lost it;
- `["held", tenant, conversation, stream, seq]`: a chunk held back behind a gap, until released.
Keys are JSON arrays: scoped by tenant, and no two streams' keys read alike.

`Staged` gathers a batch's writes over what is stored; the caller applies them once the
verdicts they led to are delivered (a crash in between replays the batch, never skips it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from guardstream.schemas import DeadLetter
from guardstream.schemas.intake import RawRecord, dead_letter


class HeldChunk(BaseModel):
    event: dict
    topic: str
    partition: int
    offset: int

    def letter(self, key: str, code: str, error: str) -> DeadLetter:
        """The dead letter of the record this chunk came from."""
        value = json.dumps(self.event).encode()
        return dead_letter(RawRecord(self.topic, self.partition, self.offset, key.encode(), value), code, error)


class StreamState(BaseModel):
    tenant: str
    partition: int = 0  # of the chunks topic: where this stream's entries are written
    prompt_tokens: int = 0  # of the templated prompt, which counts against the model's positions
    opened: bool = False
    next_seq: int = 0
    token_count: int = 0  # reply tokens judged so far
    pending_text: str = ""  # the re-tokenizer's held-back tail (bounded)
    held: list[int] = Field(default_factory=list)  # seqs waiting behind a gap, each in its own entry
    gap_since: float | None = None
    skipped: list[tuple[int, int]] = Field(default_factory=list)  # seq ranges passed over by reported gaps (latest few)
    unsafe_run: int = 0
    first_unsafe: int | None = None
    category: str | None = None  # of the first unsafe token
    stop_token: int | None = None
    worst: str = "Safe"
    reviewed: bool = False  # a chunk went to review: so does the whole stream, unless it was stopped
    # observe mode: the same counts as enforcement would have kept them, where they differ
    observed: bool = False  # a decision of this stream was observed (allowed, with what would have been done)
    would_run: int = 0
    would_stop: int | None = None  # where the debounce would have stopped it (only when it was not stopped)
    would_review: bool = False
    done: bool = False
    updated_at: float = 0.0  # wall time of its last chunk: finished and idle streams are forgotten after a while
    reply_to: int | None = None  # the replies partition of its owner: bound by its first chunk, moved only with its nonce
    nonce: str | None = None  # its first chunk's: a chunk with another is refused, and every verdict echoes it
    digest: str = ""  # of every chunk judged so far, in order: the final verdict's id covers the whole reply
    language: str | None = None  # its first chunk's, else its prompt's as detected: which policy entry decides


    def passed_over(self, seq: int) -> bool:
        """Whether `seq` was given up on when its gap was reported (it was never judged)."""
        return any(first <= seq <= last for first, last in self.skipped)


class StreamRef(NamedTuple):
    tenant: str
    conversation: str
    stream: str

    def key(self) -> str:
        return json.dumps(["state", *self])

    def prompt_key(self) -> str:
        return json.dumps(["prompt", *self])

    def ids_key(self, seq: int) -> str:
        return json.dumps(["ids", *self, seq])

    def held_key(self, seq: int) -> str:
        return json.dumps(["held", *self, seq])

    @classmethod
    def of_state_key(cls, key: str) -> StreamRef | None:
        """The stream a state entry's key names; None for the other kinds of entry."""
        kind, *rest = json.loads(key)
        return cls(*rest) if kind == "state" else None

    def entries(self, state: StreamState) -> list[str]:
        """Every key the stream may have written: what forgetting it deletes."""
        return [self.key(), self.prompt_key(), *map(self.ids_key, range(state.next_seq)), *map(self.held_key, state.held)]


def idle_entries(items: Iterable[tuple[str, int, Any]], horizon: float) -> dict[str, tuple[int, None]]:
    """Deletes for every entry of the streams idle since before `horizon`, finished or not (a
    finished one is kept that long to recognise late duplicates); a stream holding chunks stays."""
    gone: dict[str, tuple[int, None]] = {}
    for key, _, value in items:
        ref = StreamRef.of_state_key(key)
        if ref is not None and not value["held"] and value["updated_at"] < horizon:
            gone.update((entry, (-1, None)) for entry in ref.entries(StreamState.model_validate(value)))
    return gone


class Staged:
    """A batch's writes over the stored entries: reads see them, `writes` holds them to apply."""

    def __init__(self, stored: Callable[[str], Any]):
        self.stored = stored
        self.writes: dict[str, tuple[int, Any]] = {}  # key → (partition, value); None deletes

    def get(self, key: str) -> Any:
        return self.writes[key][1] if key in self.writes else self.stored(key)

    def put(self, partition: int, key: str, value: Any) -> None:
        self.writes[key] = (partition, value)

    def delete(self, key: str) -> None:
        self.writes[key] = (-1, None)

    def state(self, ref: StreamRef) -> StreamState | None:
        value = self.get(ref.key())
        return None if value is None else StreamState.model_validate(value)

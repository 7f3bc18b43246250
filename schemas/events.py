"""The wire contract: every event guardstream reads or writes, as pydantic v2 models.

Producers and consumers in other languages use the JSON Schemas exported from these
(`guardstream schemas export DIR`). Unknown fields are rejected so that a typo in a producer
surfaces as a dead letter instead of a silently ignored setting.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 32_000
MAX_MESSAGES = 64
MAX_CHUNK_TOKENS = 4_096

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Tenant = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = SCHEMA_VERSION


class Role(str, Enum):
    user = "user"
    assistant = "assistant"


class Moderate(str, Enum):
    """What a conversation event asks to judge: the last user prompt, or the last reply."""

    prompt = "prompt"
    response = "response"


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Role
    content: Text


class ConversationEvent(Wire):
    """A prompt or a finished reply to moderate with Qwen3Guard-Gen (topic `conversations`)."""

    event_id: Id
    conversation_id: Id
    tenant: Tenant
    moderate: Moderate = Moderate.prompt
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    created_at: datetime = Field(default_factory=utc_now)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)

    @model_validator(mode="after")
    def _last_message_matches(self) -> ConversationEvent:
        wanted = Role.user if self.moderate is Moderate.prompt else Role.assistant
        if self.messages[-1].role is not wanted:
            raise ValueError(
                f"moderate={self.moderate.value} needs the last message to be from "
                f"'{wanted.value}', got '{self.messages[-1].role.value}'"
            )
        if self.moderate is Moderate.response and not any(m.role is Role.user for m in self.messages):
            raise ValueError("moderate=response needs the user turn that the reply answers")
        return self


class TokenChunkEvent(Wire):
    """A piece of an assistant reply while it is generated (topic `chunks`), for Qwen3Guard-Stream.

    `seq` counts the chunks of one stream from 0, so gaps and duplicates are detected; chunk 0
    carries the user `prompt` the reply answers. Give Qwen3 token ids when the generator is a
    Qwen3 model (same tokenizer), otherwise text deltas; do not mix them in one stream.
    """

    event_id: Id
    conversation_id: Id
    stream_id: Id
    tenant: Tenant
    seq: int = Field(ge=0)
    role: Literal[Role.assistant] = Role.assistant
    prompt: Text | None = None
    token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, max_length=MAX_CHUNK_TOKENS)
    text_delta: Text | None = None
    final: bool = False
    created_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _one_payload(self) -> TokenChunkEvent:
        if (self.token_ids is None) == (self.text_delta is None):
            raise ValueError("give exactly one of token_ids or text_delta")
        if (self.seq == 0) != (self.prompt is not None):
            raise ValueError("chunk 0 carries the user prompt, later chunks do not")
        return self


class RiskLevel(str, Enum):
    safe = "Safe"
    controversial = "Controversial"
    unsafe = "Unsafe"
    error = "Error"  # the model failed or answered outside its format; the fail mode decides


class Action(str, Enum):
    allow = "allow"
    review = "review"
    block = "block"
    stop = "stop"  # stop the stream now: sent once per stream, on the chunk where the debounce tripped


class StreamPosition(BaseModel):
    """Where a Stream verdict sits in its reply; token indexes count reply tokens from 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stream_id: Id
    seq: int | None = Field(ge=0, description="the chunk judged; None on the final verdict of the stream")
    token_offset: int = Field(ge=0)
    token_count: int = Field(ge=0)
    first_unsafe_token: int | None = None
    stop_token: int | None = Field(default=None, description="the token where the debounce tripped")
    final: bool = False


class VerdictEvent(Wire):
    """One model judgement of one source event (topic `verdicts`), keyed by conversation id."""

    verdict_id: Id
    source_event_id: Id
    conversation_id: Id
    tenant: Tenant
    moderate: Moderate
    model_id: str
    model_variant: Literal["gen", "stream"]
    risk_level: RiskLevel
    categories: list[Label] = Field(default_factory=list)
    refusal: bool | None = None
    probabilities: dict[Label, float] | None = None
    action: Action
    policy: str
    error: str | None = None
    latency_ms: float = Field(ge=0)
    excerpt: Text | None = Field(default=None, description="the judged text, only when the worker is told to include it")
    stream: StreamPosition | None = None
    produced_at: datetime = Field(default_factory=utc_now)


class ActionEvent(Wire):
    """What enforcement tells a gateway to do (topic `actions`); one per verdict, same key."""

    action_id: Id
    verdict_id: Id
    source_event_id: Id
    conversation_id: Id
    tenant: Tenant
    action: Action
    reason: str
    produced_at: datetime = Field(default_factory=utc_now)


class WindowCount(Wire):
    """Verdicts counted per tenant × risk × category in one tumbling window (topic `analytics`).

    Published on every change with a stable key, so the compacted topic keeps the final count.
    """

    window_start: datetime
    window_end: datetime
    tenant: Tenant
    risk_level: RiskLevel
    category: Label
    count: int = Field(ge=0)


class DeadLetter(Wire):
    """Input that could not be moderated (topic `dlq`), with where it came from and why."""

    topic: str
    partition: int
    offset: int
    key: str | None
    raw_value: str = Field(description="the original value, decoded leniently and truncated")
    raw_size: int
    error_code: Literal["not_json", "invalid_schema", "oversize", "not_utf8", "sequence_gap", "stream_error"]
    error: str
    produced_at: datetime = Field(default_factory=utc_now)


_VERDICT_NAMESPACE = uuid.UUID("6f1b7a52-3c39-4c5e-9d1a-2f5b8f0c7e11")


def derive_id(kind: str, *parts: str) -> str:
    """A deterministic id, so a replayed event yields the same id and sinks can upsert."""
    return str(uuid.uuid5(_VERDICT_NAMESPACE, "\x1f".join((kind, *parts))))


def verdict_id(source_event_id: str, model_id: str, moderate: Moderate) -> str:
    return derive_id("verdict", source_event_id, model_id, moderate.value)

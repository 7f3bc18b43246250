"""The wire contract: every event guardstream reads or writes, as pydantic v2 models.

Producers and consumers in other languages use the JSON Schemas exported from these
(`guardstream schemas export DIR`). Unknown fields are rejected so that a typo in a producer
surfaces as a dead letter instead of a silently ignored setting.

Uniqueness: a producer keeps `event_id` unique within its (tenant, conversation_id), and
`stream_id` unique within its (tenant, conversation_id). Every id guardstream derives (verdict,
action, stream-final verdict) includes tenant and conversation, so it is unique across tenants
and the same on every replay. Ids and tenants are printable text without control characters.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 1
MAX_TEXT_CHARS = 32_000
MAX_MESSAGES = 64
MAX_CHUNK_TOKENS = 4_096
MAX_REPLY_PARTITIONS = 4_096
FOR_HEADER = "guardstream-for"  # on verdict records: VerdictEvent.answers(), read before the value is decoded



def _printable(value: str) -> str:
    """Ids end up in database keys, log lines and HTTP headers: no control or invisible format
    characters (a NUL, for one, makes PostgreSQL refuse the row)."""
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise ValueError(f"must be printable text, found the control character U+{ord(bad):04X}")
    return value


Id = Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(_printable)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Tenant = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
# a BCP 47 tag as producers write it ("es", "pt-BR", "zh-Hant"): a primary language, then subtags
LanguageTag = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$", max_length=35)]
ReplyTo = Annotated[int | None, Field(default=None, ge=0, lt=MAX_REPLY_PARTITIONS, description=(
    "the partition of the `replies` topic that the asking gateway reads: its verdicts go there too"))]
Nonce = Annotated[str | None, Field(default=None, pattern=r"^[0-9a-f]{16,64}$", description=(
    "chosen at random by the asking gateway and echoed on every verdict that answers: a gateway takes "
    "only verdicts that carry its own (hex, 16 to 64 digits)"))]


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
    reply_to: ReplyTo = None
    nonce: Nonce = None
    language: LanguageTag | None = Field(default=None, description=(
        "the conversation's language, if the producer knows it; otherwise the worker detects it"))

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
    language: LanguageTag | None = None  # chunk 0's: the stream's language (else detected from the prompt)
    token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, max_length=MAX_CHUNK_TOKENS)
    text_delta: Text | None = None
    final: bool = False
    created_at: datetime = Field(default_factory=utc_now)
    reply_to: ReplyTo = None  # the stream's verdicts follow its latest chunk that carries the stream's nonce
    nonce: Nonce = None  # the first chunk taken binds the stream's; a chunk with another is refused

    @model_validator(mode="after")
    def _one_payload(self) -> TokenChunkEvent:
        if (self.token_ids is None) == (self.text_delta is None):
            raise ValueError("give exactly one of token_ids or text_delta")
        if (self.seq == 0) != (self.prompt is not None):
            raise ValueError("chunk 0 carries the user prompt, later chunks do not")
        if self.seq != 0 and self.language is not None:
            raise ValueError("chunk 0 carries the stream's language, later chunks do not")
        return self


def answer_key(kind: Literal["e", "s"], tenant: str, conversation_id: str, own: str) -> bytes:
    """Whom a verdict answers: a conversation event ("e", its event id) or a reply stream ("s", its
    stream id), in a tenant's conversation."""
    return "\x1f".join((kind, tenant, conversation_id, own)).encode()


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
    would_stop_token: int | None = Field(default=None, description=(
        "observe mode: the token where the debounce would have stopped the stream (it was not stopped)"))
    final: bool = False


class Decided(Wire):
    """What a verdict and its action say of the policy that decided them."""

    policy_version: str | None = Field(default=None, description=(
        "the policy entry that decided the action and its version: `acme@3`, `default@0` (the starting document)"))
    observed: bool = Field(default=False, description="observe mode: the action is allow, `would_action` is what "
                                                      "enforcement would have done")
    would_action: Action | None = None

    @model_validator(mode="after")
    def _observed_says_what_would_have_been_done(self) -> Decided:
        if self.observed != (self.would_action is not None):
            raise ValueError("observed and would_action go together: an observed decision says what would have been done")
        return self


class VerdictEvent(Decided):
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
    language: LanguageTag | None = Field(default=None, description=(
        "the language the policy was chosen for: the producer's, else detected; none where it could not tell"))
    action: Action
    policy: str
    error: str | None = None
    latency_ms: float = Field(ge=0)
    excerpt: Text | None = Field(default=None, description="the judged text, only when the worker is told to include it")
    conversation: list[Message] | None = Field(default=None, max_length=MAX_MESSAGES, description=(
        "the judged conversation, for reviewers: only on a verdict sent to review for a tenant whose policy keeps "
        "review text"))
    stream: StreamPosition | None = None
    produced_at: datetime = Field(default_factory=utc_now)
    reply_to: ReplyTo = None  # copied from the request: where else (besides `verdicts`) this verdict is sent
    nonce: Nonce = None  # copied from the request (a stream's: its first chunk's)

    def answers(self) -> bytes:
        """Whom this verdict answers, as its `guardstream-for` header says: the stream, or the
        conversation event, that a gateway waits on (ids hold no control characters)."""
        kind, own = ("s", self.stream.stream_id) if self.stream is not None else ("e", self.source_event_id)
        return answer_key(kind, self.tenant, self.conversation_id, own)


class ActionEvent(Decided):
    """What enforcement tells a gateway to do (topic `actions`); one per verdict, same key."""

    action_id: Id
    verdict_id: Id
    source_event_id: Id
    conversation_id: Id
    tenant: Tenant
    action: Action
    reason: str
    decision_id: Id | None = Field(default=None, description=(
        "on an action after review: the reviewer's decision it follows (block or allow after review)"))
    produced_at: datetime = Field(default_factory=utc_now)


class ReviewDecision(Wire):
    """A reviewer's decision on a review item (topic `review-decisions`), keyed by conversation id."""

    decision_id: Id
    item_id: Id
    verdict_id: Id
    source_event_id: Id
    conversation_id: Id
    tenant: Tenant
    reviewer: Id
    decision: Literal["uphold", "overturn"]
    risk_level: RiskLevel = Field(description="the model's, on the verdict reviewed")
    categories: list[Label] = Field(default_factory=list, max_length=16, description="as the reviewer corrected them")
    note: str | None = Field(default=None, max_length=2000)
    decided_at: datetime = Field(default_factory=utc_now)

    def unsafe(self) -> bool:
        """What the reviewer found: unsafe where the model flagged the content (an Error counts as
        flagged, as failing closed does) and they upheld it, or it did not and they overturned it."""
        return (self.risk_level is not RiskLevel.safe) == (self.decision == "uphold")


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
    """Input that could not be moderated (topic `dlq`), with where it came from and why.

    Codes: `not_utf8`, `not_json`, `invalid_schema`, `oversize` (intake); `sequence_gap`,
    `stream_error` (a stream's chunks out of shape); `processing_failed` (a moderation step
    failed on this record alone); `undeliverable` (its verdict could not be written to Kafka);
    `audit_rejected` (the audit database refused its row: `topic` is then the verdict topic).
    """

    topic: str
    partition: int
    offset: int
    key: str | None = Field(description="the original key, decoded leniently and truncated to 4 KiB")
    key_size: int | None = Field(default=None, description="the original key's size in bytes")
    raw_value: str = Field(description="the original value, decoded leniently and truncated")
    raw_size: int
    error_code: Literal["not_json", "invalid_schema", "oversize", "not_utf8", "sequence_gap", "stream_error",
                        "processing_failed", "undeliverable", "audit_rejected", "unverified_decision"]
    error: str
    produced_at: datetime = Field(default_factory=utc_now)


MAX_POLICY_VERSION = 1_000_000_000  # one change a second for 30 years; a larger one is refused


class PolicyRecord(Wire):
    """One version of a tenant's policy on the policies topic (compacted, keyed
    `<tenant>/<version>/<nonce>`: a key per version; `default` is the policy of tenants no entry
    names). `policy` is a tenant policy document (see `TenantPolicy`); a record whose document is
    invalid, or whose key is not its own, is dead-lettered and changes nothing."""

    tenant: Tenant
    version: int = Field(ge=1, le=MAX_POLICY_VERSION,
                         description="counts the tenant's entries from 1 (`guardstream policy set` takes the next)")
    set_by: Id
    set_at: datetime = Field(default_factory=utc_now)
    policy: dict[str, Any]


class CanaryJudgement(BaseModel):
    """One model's side of a canary comparison."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_id: str
    risk_level: RiskLevel
    categories: list[Label] = Field(default_factory=list)
    action: Action = Field(description="what the policy does with this judgement, or in observe mode would do; "
                                       "never done for the canary")
    stop_token: int | None = Field(default=None, ge=0, description=(
        "streams: the reply token where the stream was stopped, or would have been"))
    error: str | None = None


class CanaryRecord(Wire):
    """The main model's and the canary model's verdicts on one sampled conversation event or reply
    stream (topic `canary`, keyed by conversation id). Off the enforcement path: nothing acts on it."""

    canary_id: Id = Field(description="the same on every replay: readers count each once")
    variant: Literal["gen", "stream"]
    tenant: Tenant
    conversation_id: Id
    source_event_id: Id
    moderate: Moderate
    stream_id: Id | None = None
    policy_version: str | None = Field(default=None, description="the policy entry that decided the main verdict")
    main: CanaryJudgement
    canary: CanaryJudgement
    excerpt: Text | None = Field(default=None, description="the judged text, only when the worker stores text")
    produced_at: datetime = Field(default_factory=utc_now)


_VERDICT_NAMESPACE = uuid.UUID("6f1b7a52-3c39-4c5e-9d1a-2f5b8f0c7e11")


def derive_id(kind: str, *parts: str) -> str:
    """A deterministic id, so a replayed event yields the same id and sinks can upsert."""
    return str(uuid.uuid5(_VERDICT_NAMESPACE, json.dumps([kind, *parts])))  # JSON: no two part lists read alike


def content_digest(*parts: Any) -> str:
    """What was judged, as 32 hex digits (BLAKE2b of the parts' JSON): the same content, the same digest."""
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()


def verdict_id(tenant: str, conversation_id: str, source_event_id: str, model_id: str, moderate: Moderate,
               content: str, policy_version: str | None) -> str:
    """Unique across tenants and conversations (producers only keep event ids unique within one), and
    bound to what was judged and under which policy: a replay keeps its id, but an event id reused
    for other content (`content`, a `content_digest`) is another verdict with an id of its own."""
    return derive_id("verdict", tenant, conversation_id, source_event_id, model_id, moderate.value, content,
                     policy_version or "")

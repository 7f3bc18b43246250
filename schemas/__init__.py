"""Event models and their JSON Schema export: the wire contract."""

from guardstream.schemas.events import (
    FOR_HEADER,
    SCHEMA_VERSION,
    Action,
    ActionEvent,
    CanaryJudgement,
    CanaryRecord,
    ConversationEvent,
    DeadLetter,
    Message,
    Moderate,
    PolicyRecord,
    ReviewDecision,
    RiskLevel,
    Role,
    StreamPosition,
    TokenChunkEvent,
    VerdictEvent,
    WindowCount,
    answer_key,
    content_digest,
    derive_id,
    verdict_id,
)

__all__ = [
    "FOR_HEADER", "SCHEMA_VERSION", "Action", "ActionEvent", "CanaryJudgement", "CanaryRecord", "ConversationEvent",
    "DeadLetter", "Message", "Moderate", "PolicyRecord", "ReviewDecision", "RiskLevel", "Role", "StreamPosition", "TokenChunkEvent", "VerdictEvent", "WindowCount",
    "answer_key", "content_digest", "derive_id", "verdict_id",
]

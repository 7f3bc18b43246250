"""What the moderation steps need, and nothing more: the worker's start (`guardstream/runtime.py`)
makes these from its settings and its policies feed, and tests build them directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from guardstream.wire.policy import PoliciesInForce
from guardstream.workers.moderation.language import LanguageDetector


@dataclass(frozen=True)
class GenRules:
    """What the Gen step needs: the policies in force, the input bound, whether text is kept, and
    what tells an event's language where its producer does not (None: nothing does)."""

    policies: PoliciesInForce = field(default_factory=PoliciesInForce)
    max_event_bytes: int = 256 * 1024
    store_text: bool = False
    detector: LanguageDetector | None = None


@dataclass(frozen=True)
class StreamRules:
    """What the Stream step needs: the policies in force, the settings' `stream_*` namesakes, and what
    tells a stream's language from its prompt where its first chunk does not say."""

    policies: PoliciesInForce = field(default_factory=PoliciesInForce)
    detector: LanguageDetector | None = None
    max_event_bytes: int = 256 * 1024
    debounce: int = 2
    gap_timeout_s: float = 10
    max_held_chunks: int = 256
    max_tokens: int = 16384

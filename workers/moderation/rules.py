"""What the moderation steps need, and nothing more: the worker's start (`guardstream/runtime.py`)
makes these from its settings and its policies feed, and tests build them directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from guardstream.wire.policy import PoliciesInForce


@dataclass(frozen=True)
class GenRules:
    """What the Gen step needs: the policies in force, the input bound, whether text is kept."""

    policies: PoliciesInForce = field(default_factory=PoliciesInForce)
    max_event_bytes: int = 256 * 1024
    store_text: bool = False


@dataclass(frozen=True)
class StreamRules:
    """What the Stream step needs: the policies in force, and the settings' `stream_*` namesakes."""

    policies: PoliciesInForce = field(default_factory=PoliciesInForce)
    max_event_bytes: int = 256 * 1024
    debounce: int = 2
    gap_timeout_s: float = 10
    max_held_chunks: int = 256
    max_tokens: int = 16384

"""What the moderation steps need of the settings, and nothing more: the worker's `Settings` (in
topology) makes these, and tests build them directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from guardstream.workers.moderation.policy import Policy


@dataclass(frozen=True)
class GenRules:
    """What the Gen step needs of the settings: the policy, the input bound, whether text is kept."""

    policy: Policy = field(default_factory=Policy)
    max_event_bytes: int = 256 * 1024
    store_text: bool = False


@dataclass(frozen=True)
class StreamRules:
    """What the Stream step needs of the settings (their `stream_*` namesakes)."""

    policy: Policy = field(default_factory=Policy)
    max_event_bytes: int = 256 * 1024
    debounce: int = 2
    gap_timeout_s: float = 10
    max_held_chunks: int = 256
    max_tokens: int = 16384

"""What crosses the boundary between the workers and the engines: requests, calls and answers.

No torch here, so moderation (and anything above it) can speak to the engines without loading a
model library; the engines and the pools' actors import these same types."""

from __future__ import annotations

from dataclasses import dataclass, field

from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_output import GenJudgement, MalformedOutput, parse_gen_output


@dataclass(frozen=True)
class GenRequest:
    messages: list[dict]  # [{"role": "user"|"assistant", "content": str}, ...]
    moderate: Moderate


@dataclass(frozen=True)
class GenResult:
    judgement: GenJudgement | None
    raw_output: str
    error: str | None
    latency_ms: float
    probabilities: dict[str, float] | None = None  # over the three labels, in score mode
    too_long: bool = False  # the conversation does not fit the model's context; `error` says by how much

    @classmethod
    def parsed(cls, text: str, kind: Moderate, latency_ms: float, probabilities: dict[str, float] | None) -> GenResult:
        """The result of the model's answer `text`: its judgement, or an error when it is out of format."""
        try:
            return cls(parse_gen_output(text, kind), text, None, latency_ms, probabilities)
        except MalformedOutput as exc:
            return cls(None, text, f"malformed model output: {exc}", latency_ms, probabilities)


@dataclass(frozen=True)
class StreamCall:
    """One stream's tokens for a Stream engine step. With `prompt_ids` it (re)opens the session,
    and the prompt, `history_ids` and `new_ids` go through one forward; without, `judged` says how
    many reply tokens the caller's state has the session holding, so a session out of step is
    answered missing instead of fed twice."""

    session: str
    new_ids: list[int]
    prompt_ids: list[int] | None = None  # the templated user turn and assistant header
    history_ids: list[int] = field(default_factory=list)  # reply tokens already judged, when rebuilding
    close: bool = False
    judged: int = 0


@dataclass(frozen=True)
class TokenVerdict:
    label: str
    probabilities: dict[str, float]
    category: str
    category_probability: float


@dataclass(frozen=True)
class StreamAnswer:
    """What a session's step answers, from the engine through the actor to the worker."""

    session: str
    query: TokenVerdict | None = None  # when the call opened the session: the prompt's verdict
    tokens: list[TokenVerdict] = field(default_factory=list)  # one per new token
    missing: bool = False  # the engine holds no such session (restarted, evicted) or is out of step: rebuild it
    error: str | None = None  # the engine failed on this session alone; it was closed, to be rebuilt

"""What a model pool is made of: its actors' models, counts, resources and engine options.

Torch- and Ray-free, so that the settings can extend them (a settings part is a spec plus how
callers call it) and a pool is made from one model, compared by it, and kept in its manifest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ActorSpec(BaseModel):
    """What a pool's actors are created with (fixed for the pool's life, shared by its workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str | None = None  # hub id or path (a pool is made only with one)
    actors: int = Field(default=1, ge=1)
    actor_cpus: float = Field(default=1, ge=0)
    actor_gpus: float = Field(default=0, ge=0)
    device: str = "cpu"
    dtype: str = "auto"

    @classmethod
    def of(cls, described: ActorSpec):
        """Only this spec's fields of `described` (a settings part that extends it): a pool is made
        and compared by what its actors are, not by how its callers call them."""
        return cls.model_validate(described.model_dump(include=set(cls.model_fields)))


class GenSpec(ActorSpec):
    # noop answers Safe without a model: only for `guardstream bench pipeline` (the plumbing ceiling)
    backend: Literal["transformers", "vllm", "noop"] = "transformers"
    mode: Literal["score", "generate"] = "score"  # one-pass label scoring with prefix reuse, or generate()
    batch_size: int = Field(default=16, ge=1)
    kv_cache_mb: int = Field(default=4096, ge=1)  # per actor (score mode): batches split to fit; longer is too_long
    actor_wait_ms: int = Field(default=5, ge=0)  # an actor's wait for more callers' requests


class StreamSpec(ActorSpec):
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # a torch dtype name, unlike Gen's "auto"
    max_sessions: int = Field(default=4096, ge=1)
    idle_ttl_s: float = Field(default=600, gt=0)
    kv_cache_mb: int = Field(default=4096, ge=1)  # per actor; past it, least recently used sessions are evicted


class PoolSpec(BaseModel):
    """A pool's Gen and Stream actors (either may be absent). A settings part given for either
    counts only for the spec it extends."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gen: GenSpec | None = None
    stream: StreamSpec | None = None

    @field_validator("gen", "stream", mode="before")
    @classmethod
    def _spec_only(cls, value, info):
        kind = GenSpec if info.field_name == "gen" else StreamSpec
        return kind.of(value) if isinstance(value, kind) else value

    def describe(self) -> str:
        parts = [f"{kind} {s.model} x{s.actors} ({s.actor_cpus:g} CPU, {s.actor_gpus:g} GPU, {s.device}, {s.dtype} each)"
                 for kind, s in (("gen", self.gen), ("stream", self.stream)) if s is not None]
        return "; ".join(parts) or "no model"

    def missing(self, kinds: set[str]) -> set[str]:
        return {kind for kind in kinds if getattr(self, kind) is None}

"""The worker's settings, by part: defaults, then `GUARDSTREAM_*` environment variables, then CLI flags.

Each part (`kafka`, `pool`, `gen`, `stream`, `sinks`) is a section whose fields keep their flat
names (`gen_actors` is `gen.actors`, `device` is `gen.device`): the environment and overrides
speak flat names (`wire/settings.py`), code reads the parts. The Gen and Stream parts extend the
pool's specs (`workers/pools/specs.py`) with how the worker calls the pool and judges.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, field_validator, model_validator

from guardstream.wire.settings import GatewaySettings, Section, part
from guardstream.workers import faults
from guardstream.workers.moderation.language import DETECTED
from guardstream.workers.pools.specs import GenSpec, StreamSpec


AgentName = Literal["gen", "stream", "enforcement", "audit", "review", "analytics", "canary"]
AGENTS: tuple[str, ...] = get_args(AgentName)


def default_home() -> Path:
    """Where caches, the local Ray's records, Faust's data and the default SQLite audit live."""
    return Path(os.environ.get("GUARDSTREAM_HOME", Path.home() / ".cache" / "guardstream"))


class CanarySettings(BaseModel):
    """A second model judging a deterministic sample of the traffic beside the main one, off the
    enforcement path: its own actors and consumer group, its verdicts only compared (`canary` topic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    gen_model: str | None = None  # hub id or path; None: no Gen canary
    stream_model: str | None = None  # None: no Stream canary
    sample: float = Field(default=0.05, gt=0, le=1)  # the share of conversations (by a keyed hash of their id)
    # how long one side of a pair waits for the other (a canary behind, a stream that never ends)
    join_timeout_s: float = Field(default=120, gt=0)
    max_pending: int = Field(default=10_000, ge=1)  # pairs waiting at once; past it the oldest are dropped
    max_pending_mb: float = Field(default=64, gt=0)  # and their size (verdicts, excerpts); past it too
    max_streams: int = Field(default=256, ge=1)  # reply streams judged at once; a new one past it is not judged
    actor_cpus: float = Field(default=1, ge=0)
    actor_gpus: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _some_model(self) -> CanarySettings:
        if self.gen_model is None and self.stream_model is None:
            raise ValueError("a canary names gen_model, stream_model or both")
        return self


class PoolSettings(Section):
    """Ray and the model pool: named actors in the Ray namespace of app_id, shared by its workers."""

    ray_address: str | None = None  # None: start a local Ray with ray_num_cpus
    ray_num_cpus: int = Field(default=2, ge=1)
    # create: find the app's pool or create it from the Gen and Stream parts (get-if-exists);
    # join: wait up to pool_wait_s for the pool that `guardstream pool` creates, and use it as it is.
    mode: Literal["create", "join"] = Field(default="create", alias="pool")
    wait_s: float = Field(default=900, gt=0, alias="pool_wait_s")


class GenSettings(Section, GenSpec):
    """The Gen actors (`model` None: the tiny test fixture), and how the agent calls them."""

    model_config = ConfigDict(alias_generator=lambda name: name if name in ("device", "dtype") else f"gen_{name}")
    batch_wait_ms: int = Field(default=50, ge=0)  # the agent's micro-batch window
    # batches the agent settles at once: the next is judged while one waits on its engine or its acks
    batches_in_flight: int = Field(default=2, ge=1, le=8)
    max_inflight: int = Field(default=4, ge=1)  # calls admitted per actor before callers wait
    call_timeout_s: float = Field(default=120, gt=0)


class StreamSettings(Section, StreamSpec):
    """The Stream actors (`model` None: the tiny test fixture; `device` unset: Gen's), and how
    reply streams are judged."""

    model_config = ConfigDict(alias_generator=lambda name: f"stream_{name}")
    call_timeout_s: float = Field(default=120, gt=0)
    batch_size: int = Field(default=256, ge=1)  # chunks gathered into one batched step
    batch_wait_ms: int = Field(default=10, ge=0)
    debounce: int = Field(default=2, ge=1)  # consecutive unsafe tokens that stop a stream
    gap_timeout_s: float = Field(default=10, gt=0)  # how long a missing chunk is waited for
    max_tokens: int = Field(default=16384, ge=1)  # reply tokens judged per stream; past it the stream ends
    max_held_chunks: int = Field(default=256, ge=1)  # how far ahead of a gap a chunk may wait


class SinkSettings(Section):
    """Where verdicts go after enforcement: the audit store and the analytics windows."""

    audit_url: str | None = None  # postgresql://... or sqlite:///path; None: SQLite under home
    audit_store_text: bool = False
    audit_ca_file: Path | None = None  # the audit database's CA (PEM): verified with sslmode verify-full
    analytics_window_s: int = Field(default=60, ge=1)
    analytics_retention_s: int = Field(default=3600, ge=1)


class Settings(GatewaySettings):
    """A worker's: the gateways' settings (Kafka, the starting policy), its model pool and the
    parts that call it, its sinks, and its own."""

    pool: PoolSettings = part(PoolSettings)
    gen: GenSettings = part(GenSettings)
    stream: StreamSettings = part(StreamSettings)
    sinks: SinkSettings = part(SinkSettings)

    # Which agents this worker runs (comma-separated in the environment): the Gen and Stream paths
    # need the GPU pool, the sinks only the verdict topic, so they can run as separate deployments.
    agents: frozenset[AgentName] = frozenset(AGENTS)
    # The languages the detector tells apart (ISO 639-1, comma-separated in the environment), for an
    # event whose producer gives none: its policy entry, its verdict's `language`. `none`: no
    # detector (a worker then spends neither its 1.3 to 2.5 s and 350 MB to load nor its ms per event).
    languages: tuple[Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")], ...] = DETECTED
    # An event under this limit is stored in a stream's entries whole, so it stays below the
    # broker's 1 MiB message limit with room for the entry around it.
    max_event_bytes: int = Field(default=256 * 1024, ge=1024, le=768 * 1024)
    # Where the stream and analytics tables live: on disk in `data_dir` (a restart reads only the
    # changelog's tail, and memory does not grow with retention), or in memory (tests, tiny runs).
    table_store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: Path | None = None  # the worker's own: its table stores (None: `home`/faust)
    metrics_port: int = Field(default=0, ge=0)  # 0: no Prometheus endpoint or health probes
    metrics_host: str = "127.0.0.1"  # the address it binds; 0.0.0.0 for probes from outside (the chart sets it)
    health_port: int = Field(default=0, ge=0)  # /healthz and /readyz on a server of their own; 0: on the metrics port
    # A signalled worker still stopping after this long (its stop waiting on a broker that does not
    # answer) ends its children and exits, as a crash would: under the chart's 60 s grace period.
    shutdown_grace_s: float = Field(default=30, gt=0)
    faults: str = ""  # tests only: "deliver=3,pool=2,audit=1" fails each point that many times (workers/faults.py)
    canary: CanarySettings | None = None  # JSON in GUARDSTREAM_CANARY; run by workers whose agents include canary
    # keys the canary's sample hash, so that whoever picks conversation ids cannot pick what the canary
    # sees; give every worker the same (None: a random one per process, so workers sample differently)
    canary_sample_secret: SecretStr | None = None
    home: Path = Field(default_factory=default_home)

    @field_validator("stream")
    @classmethod
    def _stream_device_is_gens_unless_set(cls, stream: StreamSettings, info) -> StreamSettings:
        if "device" in stream.model_fields_set or "gen" not in info.data:
            return stream
        return stream.model_copy(update={"device": info.data["gen"].device})

    @field_validator("agents", "languages", mode="before")
    @classmethod
    def _comma_list(cls, value, info):
        if info.field_name == "languages" and value == "none":
            return []
        return [a.strip() for a in value.split(",") if a.strip()] if isinstance(value, str) else value

    @field_validator("agents")
    @classmethod
    def _some_agent(cls, value):
        if not value:
            raise ValueError(f"name at least one of {', '.join(AGENTS)}")
        return value

    @field_validator("canary", mode="before")
    @classmethod
    def _canary_json(cls, value):
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"GUARDSTREAM_CANARY is not JSON ({exc})") from None

    @field_validator("faults")
    @classmethod
    def _fault_spec(cls, value):
        faults.parse(value)
        return value

    def for_broker(self, cluster_id: str | None) -> Settings:
        """These settings for the cluster found at start (`KafkaSettings.for_broker`)."""
        return self.model_copy(update={"kafka": self.kafka.for_broker(cluster_id)})

    def for_nodes(self, nodes: int) -> Settings:
        """These settings for a cluster of `nodes` brokers: topics replicated up to 3 times, unless a
        replication was set."""
        if "topic_replication" in self.kafka.model_fields_set:
            return self
        return self.model_copy(update={"kafka": self.kafka.model_copy(update={"topic_replication": min(3, nodes)})})

    @property
    def creates_models(self) -> bool:
        """Whether this worker loads models: it judges (gen or stream) and creates its own pool;
        a worker that joins a pool takes the pool's, and one of sinks needs none."""
        return bool(self.agents & {"gen", "stream"}) and self.pool.mode == "create"

    @property
    def audit_group(self) -> str:
        """The audit sink's consumer group: its own, so a database outage holds back no other agent."""
        return f"{self.kafka.group_id}-audit"

    @property
    def review_group(self) -> str:
        """The review queue's consumer group: its own, as audit's is."""
        return f"{self.kafka.group_id}-review"

    @property
    def canary_group(self) -> str:
        """The canary's consumer group: its own, so a canary behind holds back no agent that enforces."""
        return f"{self.kafka.group_id}-canary"

    @property
    def canary_app_id(self) -> str:
        """The canary pool's app id (its Ray namespace is `guardstream-<this>`)."""
        return f"{self.kafka.app_id}-canary"

    @property
    def runs_canary(self) -> bool:
        return self.canary is not None and "canary" in self.agents

    def canary_pool_settings(self) -> Settings:
        """These settings with the canary's models in place of the main ones, one actor each with the
        canary's resources: what the canary pool (Ray app `<app id>-canary`) is made from."""
        c = self.canary
        actor = {"actors": 1, "actor_cpus": c.actor_cpus, "actor_gpus": c.actor_gpus}
        backend = "transformers" if self.gen.backend == "noop" else self.gen.backend
        return self.model_copy(update={
            "kafka": self.kafka.model_copy(update={"app_id": self.canary_app_id}),
            "gen": self.gen.model_copy(update={**actor, "model": c.gen_model, "backend": backend}),
            "stream": self.stream.model_copy(update={**actor, "model": c.stream_model}),
            "pool": self.pool.model_copy(update={"mode": "create"}),
            "agents": frozenset(v for v in ("gen", "stream") if getattr(c, f"{v}_model"))})

    @property
    def state_dir(self) -> Path:
        """Where this worker's table stores live; two workers on one machine need their own."""
        return self.data_dir or self.home / "faust"

    def audit_target(self) -> str:
        return self.sinks.audit_url or f"sqlite:///{self.home / 'audit.sqlite'}"

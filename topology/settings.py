"""Runtime settings: defaults, then `GUARDSTREAM_*` environment variables, then CLI flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from guardstream.workers.moderation.policy import Policy
from guardstream.workers.moderation.rules import GenRules, StreamRules
from guardstream.workers import faults


AgentName = Literal["gen", "stream", "enforcement", "audit", "analytics", "canary"]
AGENTS: tuple[str, ...] = get_args(AgentName)


def default_home() -> Path:
    """Where caches, the local Ray's records, Faust's data and the default SQLite audit live."""
    return Path(os.environ.get("GUARDSTREAM_HOME", Path.home() / ".cache" / "guardstream"))


class SettingsError(ValueError):
    pass


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


def _json(name: str, raw: str):
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"GUARDSTREAM_{name.upper()} is not JSON ({exc})") from None


# Tansu, the embedded broker, names its cluster so; it answers a fetch only at the end of its long
# poll, so its consumers poll this often (`bench stream-pipeline`: 20 ms against 1,500 ms)
TANSU_CLUSTER_ID = "tansu_cluster"
TANSU_FETCH_WAIT_MS = 20


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Kafka. No bootstrap servers means "use the embedded broker" (CLI) or "a test started one".
    kafka_bootstrap: str | None = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None
    topic_prefix: str = "guard."
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # The replies topic: each gateway reads its own verdicts on a partition of its own (guardstream.client).
    reply_partitions: int = Field(default=32, ge=1, le=4096)
    reply_partition: int | None = Field(default=None, ge=0)  # a fixed one; None: claimed in the group `<prefix>gateways`
    app_id: str = "guardstream"
    # A new consumer group's first join waits on the rebalance timeout (Tansu: half of it).
    kafka_rebalance_timeout_s: float = Field(default=10, gt=0)
    kafka_session_timeout_s: float = Field(default=10, gt=0)
    # The agents' fetch long poll (Faust's own: 1,500 ms). Kafka answers a waiting fetch when a
    # record arrives, so there it only paces idle polling. Tansu (the embedded broker) answers at the
    # end of the wait, so there it adds to every chunk's latency: unless set, a worker that finds
    # Tansu uses TANSU_FETCH_WAIT_MS instead (`for_broker`).
    kafka_fetch_max_wait_ms: int = Field(default=1500, ge=1, le=5000)
    # What the worker found at start (`for_broker`): Tansu's quirks are worked around only on Tansu.
    broker_kind: Literal["kafka", "tansu"] = "kafka"
    # A signalled worker still stopping after this long (its stop waiting on a broker that does not
    # answer) ends its children and exits, as a crash would: under the chart's 60 s grace period.
    shutdown_grace_s: float = Field(default=30, gt=0)

    # Ray and the model pool: named actors in the Ray namespace of app_id, shared by its workers.
    ray_address: str | None = None  # None: start a local Ray with ray_num_cpus
    ray_num_cpus: int = Field(default=2, ge=1)
    # create: find the app's pool or create it from the settings below (get-if-exists);
    # join: wait up to pool_wait_s for the pool that `guardstream pool` creates, and use it as it is.
    pool: Literal["create", "join"] = "create"
    pool_wait_s: float = Field(default=900, gt=0)
    gen_model: str | None = None  # hub id or path; None: the tiny test-fixture checkpoint
    # noop answers Safe without a model: only for `guardstream bench pipeline` (the plumbing ceiling)
    gen_backend: Literal["transformers", "vllm", "noop"] = "transformers"
    gen_mode: Literal["score", "generate"] = "score"  # one-pass label scoring with prefix reuse, or generate()
    gen_actors: int = Field(default=1, ge=1)
    gen_actor_cpus: float = Field(default=1, ge=0)
    gen_actor_gpus: float = Field(default=0, ge=0)
    device: str = "cpu"
    dtype: str = "auto"
    gen_batch_size: int = Field(default=16, ge=1)
    gen_kv_cache_mb: int = Field(default=4096, ge=1)  # per actor (score mode): batches split to fit; longer is too_long
    gen_batch_wait_ms: int = Field(default=50, ge=0)  # the agent's micro-batch window
    gen_actor_wait_ms: int = Field(default=5, ge=0)  # an actor's wait for more callers' requests
    gen_max_inflight: int = Field(default=4, ge=1)  # calls admitted per actor before callers wait
    gen_call_timeout_s: float = Field(default=120, gt=0)

    stream_model: str | None = None  # Qwen3Guard-Stream hub id or path; None: the tiny test fixture
    stream_actors: int = Field(default=1, ge=1)
    stream_actor_cpus: float = Field(default=1, ge=0)
    stream_actor_gpus: float = Field(default=0, ge=0)
    stream_device: str | None = None  # None: `device`
    stream_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    stream_call_timeout_s: float = Field(default=120, gt=0)
    stream_max_sessions: int = Field(default=4096, ge=1)
    stream_idle_ttl_s: float = Field(default=600, gt=0)
    stream_kv_cache_mb: int = Field(default=4096, ge=1)  # per actor; past it, least recently used sessions are evicted
    stream_batch_size: int = Field(default=256, ge=1)  # chunks gathered into one batched step
    stream_batch_wait_ms: int = Field(default=10, ge=0)
    stream_debounce: int = Field(default=2, ge=1)  # consecutive unsafe tokens that stop a stream
    stream_gap_timeout_s: float = Field(default=10, gt=0)  # how long a missing chunk is waited for
    stream_max_tokens: int = Field(default=16384, ge=1)  # reply tokens judged per stream; past it the stream ends
    stream_max_held_chunks: int = Field(default=256, ge=1)  # how far ahead of a gap a chunk may wait

    # Which agents this worker runs (comma-separated in the environment): the Gen and Stream paths
    # need the GPU pool, the sinks only the verdict topic, so they can run as separate deployments.
    agents: frozenset[AgentName] = frozenset(AGENTS)

    @field_validator("agents", mode="before")
    @classmethod
    def _agent_list(cls, value):
        return [a.strip() for a in value.split(",") if a.strip()] if isinstance(value, str) else value

    @field_validator("agents")
    @classmethod
    def _some_agent(cls, value):
        if not value:
            raise ValueError(f"name at least one of {', '.join(AGENTS)}")
        return value

    # Input limits and downstream sinks.
    # An event under this limit is stored in a stream's entries whole, so it stays below the
    # broker's 1 MiB message limit with room for the entry around it.
    max_event_bytes: int = Field(default=256 * 1024, ge=1024, le=768 * 1024)
    audit_url: str | None = None  # postgresql://... or sqlite:///path; None: SQLite under home
    audit_store_text: bool = False
    audit_ca_file: Path | None = None  # the audit database's CA (PEM): verified with sslmode verify-full
    # Where the stream and analytics tables live: on disk in `data_dir` (a restart reads only the
    # changelog's tail, and memory does not grow with retention), or in memory (tests, tiny runs).
    table_store: Literal["rocksdb", "memory"] = "rocksdb"
    data_dir: Path | None = None  # the worker's own: its table stores (None: `home`/faust)
    analytics_window_s: int = Field(default=60, ge=1)
    analytics_retention_s: int = Field(default=3600, ge=1)
    metrics_port: int = Field(default=0, ge=0)  # 0: no Prometheus endpoint or health probes
    metrics_host: str = "127.0.0.1"  # the address it binds; 0.0.0.0 for probes from outside (the chart sets it)
    health_port: int = Field(default=0, ge=0)  # /healthz and /readyz on a server of their own; 0: on the metrics port
    faults: str = ""  # tests only: "deliver=3,pool=2,audit=1" fails each point that many times (workers/faults.py)
    policy: Policy = Field(default_factory=Policy)
    # How stale the policies in force may be: a worker or `serve` whose policies reader has not
    # been at the topic's end for longer is not ready (it keeps enforcing what it has).
    policy_max_stale_s: float = Field(default=30, gt=0)
    canary: CanarySettings | None = None  # JSON in GUARDSTREAM_CANARY; run by workers whose agents include canary
    # keys the canary's sample hash, so that whoever picks conversation ids cannot pick what the canary
    # sees; give every worker the same (None: a random one per process, so workers sample differently)
    canary_sample_secret: SecretStr | None = None
    home: Path = Field(default_factory=default_home)

    @field_validator("faults")
    @classmethod
    def _fault_spec(cls, value):
        faults.parse(value)
        return value

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides) -> Settings:
        """Environment (`GUARDSTREAM_<FIELD>`) under explicit overrides; `None` overrides are ignored."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for name in cls.model_fields:
            raw = environ.get(f"GUARDSTREAM_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = Policy.from_source(raw) if name == "policy" else _json(name, raw) if name == "canary" else raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"invalid settings ({problems}); see `guardstream worker --help`") from None

    def for_broker(self, cluster_id: str | None) -> Settings:
        """These settings for the cluster found at start: on Tansu, its kind and (unless one was set)
        its fetch wait."""
        if cluster_id != TANSU_CLUSTER_ID:
            return self
        update = {"broker_kind": "tansu"}
        if "kafka_fetch_max_wait_ms" not in self.model_fields_set:
            update["kafka_fetch_max_wait_ms"] = TANSU_FETCH_WAIT_MS
        return self.model_copy(update=update)

    def for_nodes(self, nodes: int) -> Settings:
        """These settings for a cluster of `nodes` brokers: topics replicated up to 3 times, unless a
        replication was set."""
        if "topic_replication" in self.model_fields_set:
            return self
        return self.model_copy(update={"topic_replication": min(3, nodes)})

    def gen_rules(self) -> GenRules:
        return GenRules(policy=self.policy, max_event_bytes=self.max_event_bytes, store_text=self.audit_store_text)

    def stream_rules(self) -> StreamRules:
        return StreamRules(policy=self.policy, max_event_bytes=self.max_event_bytes, debounce=self.stream_debounce,
                           gap_timeout_s=self.stream_gap_timeout_s, max_held_chunks=self.stream_max_held_chunks,
                           max_tokens=self.stream_max_tokens)

    @property
    def creates_models(self) -> bool:
        """Whether this worker loads models: it judges (gen or stream) and creates its own pool;
        a worker that joins a pool takes the pool's, and one of sinks needs none."""
        return bool(self.agents & {"gen", "stream"}) and self.pool == "create"

    @property
    def group_id(self) -> str:
        """The workers' consumer group and Faust's app id, under the topic prefix: Faust names its
        own topics after it (`<id>-<table>-changelog`, `<id>-__assignor-__leader`), so one prefix
        ACL covers every topic and group the app uses."""
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def gateway_group(self) -> str:
        """The gateways' group on the replies topic: it gives each gateway a partition of its own."""
        return f"{self.topic_prefix}gateways"

    @property
    def audit_group(self) -> str:
        """The audit sink's consumer group: its own, so a database outage holds back no other agent."""
        return f"{self.group_id}-audit"

    @property
    def canary_group(self) -> str:
        """The canary's consumer group: its own, so a canary behind holds back no agent that enforces."""
        return f"{self.group_id}-canary"

    @property
    def canary_app_id(self) -> str:
        """The canary pool's app id (its Ray namespace is `guardstream-<this>`)."""
        return f"{self.app_id}-canary"

    @property
    def runs_canary(self) -> bool:
        return self.canary is not None and "canary" in self.agents

    def canary_pool_settings(self) -> Settings:
        """These settings with the canary's models in place of the main ones, one actor each with the
        canary's resources: what the canary pool (Ray app `<app id>-canary`) is made from."""
        c = self.canary
        return self.model_copy(update=dict(
            app_id=self.canary_app_id, gen_model=c.gen_model, stream_model=c.stream_model, gen_actors=1,
            stream_actors=1, gen_actor_cpus=c.actor_cpus, stream_actor_cpus=c.actor_cpus, gen_actor_gpus=c.actor_gpus,
            stream_actor_gpus=c.actor_gpus, agents=frozenset(v for v in ("gen", "stream") if getattr(c, f"{v}_model")),
            gen_backend="transformers" if self.gen_backend == "noop" else self.gen_backend, pool="create"))

    @property
    def state_dir(self) -> Path:
        """Where this worker's table stores live; two workers on one machine need their own."""
        return self.data_dir or self.home / "faust"

    def audit_target(self) -> str:
        return self.audit_url or f"sqlite:///{self.home / 'audit.sqlite'}"

    def kafka_client_options(self) -> dict:
        """aiokafka keyword arguments for the security settings."""
        options: dict = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_sasl_mechanism:
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password)
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            import ssl

            options["ssl_context"] = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)
        return options

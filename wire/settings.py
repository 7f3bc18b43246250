"""Settings by part, read from flat `GUARDSTREAM_*` names, and what gateways need of them.

Each part of the settings is a `Section`: frozen, refusing unknown names, and with each field also
known by its flat name (its alias, `kafka_bootstrap` for `kafka.bootstrap`): the environment
(`GUARDSTREAM_KAFKA_BOOTSTRAP`) and overrides speak flat names, code reads the parts.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from guardstream.wire.policy import Policy

# Tansu, the embedded broker, names its cluster so; it answers a fetch only at the end of its long
# poll, so its consumers poll this often (`bench stream-pipeline`: 20 ms against 1,500 ms)
TANSU_CLUSTER_ID = "tansu_cluster"
TANSU_FETCH_WAIT_MS = 20


class SettingsError(ValueError):
    pass


class Section(BaseModel):
    """One part of the settings, its fields known by name and by flat name."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True)


def sections(model: type[BaseModel]) -> dict[str, type[Section]]:
    """The fields of `model` that are sections, by name."""
    return {name: field.annotation for name, field in model.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section)}


def flat_names(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Each flat name of `model` → the path of the field it names (`kafka_bootstrap` → kafka, bootstrap)."""
    parts = sections(model)
    names: dict[str, tuple[str, ...]] = {}
    for name, field in model.model_fields.items():
        if name in parts:
            names |= {flat: (name, *path) for flat, path in flat_names(parts[name]).items()}
        else:
            names[field.alias or name] = (name,)
    return names


def nested(model: type[BaseModel], flat: Mapping[str, Any]) -> dict[str, Any]:
    """Values under flat names, placed in `model`'s parts (under their flat names, which validate)."""
    names, values = flat_names(model), {}
    for key, value in flat.items():
        if key not in names:
            raise SettingsError(f"unknown setting {key!r}")
        path = names[key]
        into = values
        for part in path[:-1]:
            into = into.setdefault(part, {})
        into[key] = value
    return values


_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("guardstream_environ", default=None)


class FlatEnvironment(PydanticBaseSettingsSource):
    """`GUARDSTREAM_<FLAT NAME>` for every field, placed in its part; raw text, which the fields'
    validators parse (an empty variable counts as unset). The process environment, unless `load`
    was given another."""

    def __init__(self, settings_cls: type[BaseModel]):
        super().__init__(settings_cls)
        given = _ENVIRON.get()
        self.environ = os.environ if given is None else given

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ reads every field at once
        raise NotImplementedError

    def __call__(self) -> dict[str, Any]:
        found = {flat: self.environ[f"GUARDSTREAM_{flat.upper()}"] for flat in flat_names(self.settings_cls)
                 if self.environ.get(f"GUARDSTREAM_{flat.upper()}")}
        return nested(self.settings_cls, found)


def load(model: type[BaseSettings], environ: Mapping[str, str] | None = None, **overrides):
    """`model` from `environ` (the process environment when None) under flat-named overrides (`None`
    ones are ignored), which pydantic-settings lays over it part by part; an invalid value is a
    `SettingsError` that names the setting."""
    read = _ENVIRON.set(environ)
    try:
        return model(**nested(model, {k: v for k, v in overrides.items() if v is not None}))
    except ValidationError as exc:
        parts = sections(model)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:] if e['loc'] and e['loc'][0] in parts else e['loc']))}: "
                             f"{e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid settings ({problems}); see `guardstream worker --help`") from None
    finally:
        _ENVIRON.reset(read)


def _kafka_alias(name: str) -> str:
    return name if name in ("topic_prefix", "topic_partitions", "topic_replication", "reply_partitions",
                            "reply_partition", "app_id", "broker_kind") else f"kafka_{name}"


class KafkaSettings(Section):
    """Where the broker is, how to reach it, and the names guardstream uses on it: all a gateway needs."""

    model_config = ConfigDict(alias_generator=_kafka_alias)

    # No bootstrap servers means "use the embedded broker" (CLI) or "a test started one".
    bootstrap: str | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None
    topic_prefix: str = "guard."
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    # The replies topic: each gateway reads its own verdicts on a partition of its own (guardstream.client).
    reply_partitions: int = Field(default=32, ge=1, le=4096)
    reply_partition: int | None = Field(default=None, ge=0)  # a fixed one; None: claimed in the group `<prefix>gateways`
    app_id: str = "guardstream"
    # A new consumer group's first join waits on the rebalance timeout (Tansu: half of it).
    rebalance_timeout_s: float = Field(default=10, gt=0)
    session_timeout_s: float = Field(default=10, gt=0)
    # The agents' fetch long poll (Faust's own: 1,500 ms). Kafka answers a waiting fetch when a
    # record arrives, so there it only paces idle polling. Tansu (the embedded broker) answers at the
    # end of the wait, so there it adds to every chunk's latency: unless set, a worker that finds
    # Tansu uses TANSU_FETCH_WAIT_MS instead (`for_broker`).
    fetch_max_wait_ms: int = Field(default=1500, ge=1, le=5000)
    # What the worker found at start (`for_broker`): Tansu's quirks are worked around only on Tansu.
    broker_kind: Literal["kafka", "tansu"] = "kafka"

    def for_broker(self, cluster_id: str | None) -> KafkaSettings:
        """These settings for the cluster found at start: on Tansu, its kind and (unless one was set)
        its fetch wait."""
        if cluster_id != TANSU_CLUSTER_ID:
            return self
        update: dict = {"broker_kind": "tansu"}
        if "fetch_max_wait_ms" not in self.model_fields_set:
            update["fetch_max_wait_ms"] = TANSU_FETCH_WAIT_MS
        return self.model_copy(update=update)

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

    def client_options(self) -> dict:
        """aiokafka keyword arguments for the security settings."""
        options: dict = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        return options


def part(section: type[Section]):
    """A settings part's field: its defaults, never the environment (the settings read that once)."""
    return Field(default_factory=lambda: section.model_validate({}))


class GatewaySettings(BaseSettings):
    """What a gateway (`guardstream.client`, `serve`) needs: Kafka, and the policies whose fail modes
    answer a silence. The worker's settings extend these. `GatewaySettings()` reads the environment."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    kafka: KafkaSettings = part(KafkaSettings)
    policy: Policy = Field(default_factory=Policy)  # the starting document: JSON, or a JSON file's path
    # How stale the policies in force may be: a worker or `serve` whose policies reader has not
    # been at the topic's end for longer is not ready (it keeps enforcing what it has).
    policy_max_stale_s: float = Field(default=30, gt=0)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **_):
        return init_settings, FlatEnvironment(settings_cls)

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_source(cls, value):
        return Policy.from_source(value) if isinstance(value, str) else value

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides):
        """Environment (`GUARDSTREAM_<FLAT NAME>`) under flat-named overrides; `None` overrides are ignored."""
        return load(cls, environ, **overrides)

"""The console's settings (`GUARDSTREAM_REVIEW_*`), apart from the console so that reading them
(the CLI's options) loads no web server. It reads the queue where the workers write it (the audit
database) and publishes decisions on the broker, so it has the workers' settings as well."""

from __future__ import annotations

from pydantic import ConfigDict, Field, SecretStr

from guardstream.topology.settings import Settings
from guardstream.wire.settings import Section, part


class ConsoleEndpoint(Section):
    """Where the console listens, who may sign in, and how long sessions and leases last."""

    model_config = ConfigDict(alias_generator=lambda name: f"review_{name}")
    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=1, le=65535)
    keys: str | None = None  # the reviewer keys (`guardstream keys new --review`): JSON, or a JSON file's path
    # signs sessions and CSRF tokens; every replica needs the same one (None: a random one per process)
    session_secret: SecretStr | None = None
    session_hours: float = Field(default=8, gt=0, le=168)
    lease_s: float = Field(default=300, ge=5, le=86400)  # how long a claimed item stays the reviewer's
    # cookies only over HTTPS; None: unless the console listens on a loopback address
    secure_cookie: bool | None = None


class ConsoleSettings(Settings):
    """`guardstream review serve`'s: the workers' settings (Kafka, the audit database), and the console's."""

    console: ConsoleEndpoint = part(ConsoleEndpoint)

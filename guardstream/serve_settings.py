"""`guardstream serve`'s settings: a gateway's (Kafka, the starting policy) and its endpoint's,
apart from the endpoint itself so that reading them (the CLI's options) loads no web server."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from guardstream.callers import Limits, Rate
from guardstream.wire.settings import GatewaySettings, Section, part


class EndpointSettings(Section):
    """The endpoint's part of `serve`'s settings (`GUARDSTREAM_SERVE_*`): where it listens, how long
    a caller waits for a verdict, and what callers may cost."""

    model_config = ConfigDict(alias_generator=lambda name: f"serve_{name}")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    timeout_s: float = Field(default=5, gt=0)  # then the tenant's fail mode answers
    tenant: str = "default"  # without keys (--insecure-no-auth): the tenant of requests that name none
    max_body_bytes: int = Field(default=Limits.max_body_bytes, ge=1)
    rate: Rate = Limits.rate  # per key, unless its entry says otherwise
    concurrency: int = Field(default=Limits.concurrency, ge=1)  # in flight per key, unless its entry says otherwise
    max_connections: int = Field(default=1024, ge=1)  # of callers whose request is in (then 503)
    unproven_connections: int = Field(default=Limits.unproven_connections, ge=1)

    def limits(self) -> Limits:
        return Limits(max_body_bytes=self.max_body_bytes, rate=self.rate, concurrency=self.concurrency,
                      unproven_connections=self.unproven_connections)


class ServeSettings(GatewaySettings):
    """`guardstream serve`'s: a gateway's settings, and its endpoint's."""

    serve: EndpointSettings = part(EndpointSettings)

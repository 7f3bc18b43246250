"""Who may call `guardstream serve`, for which tenants, and what each call may cost.

API keys are stored only as SHA-256 hashes.

`GUARDSTREAM_API_KEYS` is a JSON document, or the path of one:

    {"keys": [{"name": "gateway-eu", "sha256": "<hex>", "tenants": ["acme", "acme-eu"],
               "rate": "50/second", "concurrency": 32}]}

A caller sends its key as `Authorization: Bearer <key>` (the `openai` client's `api_key`). Its
tenant is the key's first one; `X-Guardstream-Tenant` may pick another of the key's tenants only.
`rate` (a `limits` rate string) and `concurrency` (requests at once) are optional per key; the
server's defaults apply where they are left out. `guardstream keys new` makes a key and its entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from limits import parse as parse_rate
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from guardstream.schemas.events import Tenant

KEY_PREFIX = "gsk-"
REVIEW_KEY_PREFIX = "gsr-"  # a reviewer key (GUARDSTREAM_REVIEW_KEYS), told apart from a caller's at a glance


@dataclass(frozen=True)
class Limits:
    """What one caller may cost. A key's own `rate` and `concurrency` replace the defaults."""

    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 10.0  # for the whole body, however it is sent
    header_timeout_s: float = 10.0  # for a connection's request line and headers
    unproven_connections: int = 64  # connections whose request is not yet in, apart from the connection limit
    rate: str = "50/second"
    concurrency: int = 32


def _readable_rate(rate: str) -> str:
    parse_rate(rate)  # raises ValueError on what `limits` cannot read; "50/second" works
    return rate


Rate = Annotated[str, AfterValidator(_readable_rate)]  # requests per period, as `limits` reads it


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    tenants: list[Tenant] = Field(min_length=1, max_length=1000)
    rate: Rate | None = None
    concurrency: int | None = Field(default=None, ge=1)


class ApiKeys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    keys: list[ApiKey] = Field(min_length=1)

    @classmethod
    def from_source(cls, source: str) -> ApiKeys:
        """A JSON document, or the path of a JSON file."""
        text = source if source.lstrip().startswith("{") else Path(source).read_text()
        return cls.model_validate(json.loads(text))

    def find(self, presented: str) -> ApiKey | None:
        """The key whose hash matches: every stored hash is compared in constant time, so how long
        this takes tells nothing about how close a guess came."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found


def new_key(name: str, tenants: list[str], prefix: str | None = None) -> tuple[str, ApiKey]:
    """A fresh random key (shown once) and the entry that stores its hash."""
    key = (prefix or KEY_PREFIX) + secrets.token_urlsafe(32)
    return key, ApiKey(name=name, sha256=hashlib.sha256(key.encode()).hexdigest(), tenants=tenants)


class InFlight:
    """How many calls each key (an API key, a tenant) has in flight. A key with none is forgotten
    (and `on_idle` told), so the map holds only keys busy now, however many keys callers pick."""

    def __init__(self, on_idle: Callable[[Hashable], None] = lambda _key: None):
        self._count: Counter[Hashable] = Counter()
        self._on_idle = on_idle

    def count(self, key: Hashable) -> int:
        return self._count.get(key, 0)

    def __len__(self) -> int:
        return len(self._count)

    @contextmanager
    def held(self, key: Hashable) -> Iterator[None]:
        self._count[key] += 1
        try:
            yield
        finally:
            self._count[key] -= 1
            if not self._count[key]:
                del self._count[key]
                self._on_idle(key)

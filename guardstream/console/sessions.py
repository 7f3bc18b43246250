"""Who is signed in, without server-side state: a session cookie signed with the console's secret,
naming the reviewer key it was opened with, and the CSRF token that goes with it.

The key itself is never stored: the cookie holds the key's name and a prefix of its hash, and each
request looks the key up again, so removing a key from `GUARDSTREAM_REVIEW_KEYS` (and restarting)
ends its sessions, and a change of its tenants applies at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from guardstream.callers import ApiKey, ApiKeys

COOKIE = "gs_review"
SIGNIN_COOKIE = "gs_signin"  # a nonce for the sign-in form's CSRF token, before there is a session


@dataclass(frozen=True)
class Reviewer:
    """A signed-in reviewer: the key's name (who decided, in decisions) and the tenants it may review."""
    name: str
    tenants: tuple[str, ...]
    nonce: str

    def may_review(self, tenant: str) -> bool:
        return tenant in self.tenants


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, secret: bytes, lifetime_s: float):
        self.secret = secret
        self.lifetime_s = lifetime_s

    def _sign(self, purpose: str, data: str) -> str:
        return _b64(hmac.new(self.secret, f"{purpose}|{data}".encode(), hashlib.sha256).digest())

    def open(self, key: ApiKey) -> str:
        """The cookie of a new session for `key`."""
        body = _b64(json.dumps([key.name, key.sha256[:16], time.time() + self.lifetime_s, secrets.token_urlsafe(16)]).encode())
        return f"{body}.{self._sign('session', body)}"

    def read(self, cookie: str | None, keys: ApiKeys) -> Reviewer | None:
        """The reviewer of a genuine, unexpired session whose key still exists; else None."""
        if not cookie or len(cookie) > 512 or "." not in cookie:
            return None
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature, self._sign("session", body)):
            return None
        try:
            name, digest, expires, nonce = json.loads(_unb64(body))
        except ValueError:
            return None
        key = next((k for k in keys.keys if k.name == name and k.sha256.startswith(digest)), None)
        if key is None or expires < time.time():
            return None
        return Reviewer(key.name, tuple(key.tenants), nonce)

    def csrf(self, reviewer: Reviewer) -> str:
        """The token every form of this session carries."""
        return self._sign("csrf", reviewer.nonce)

    def signin_csrf(self, nonce: str) -> str:
        return self._sign("signin", nonce)

    def valid(self, expected: str, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(expected, given)

"""An OpenAI-compatible moderation endpoint over the pipeline: `POST /v1/moderations`.

Gateways that already call OpenAI's moderation API (LiteLLM, agentgateway, Envoy AI Gateway) use
guardstream by changing the base URL and the key. Each input is a user prompt, sent through the
client as a conversation event and judged by Qwen3Guard-Gen in the workers; the answer has
OpenAI's shape, plus a `qwen3guard` object with what OpenAI's categories cannot say (PII,
politically sensitive, copyright, jailbreak; the risk level and the tenant policy's action).
`flagged` means the action is block (or stop); a verdict that does not come in time, or cannot
come, is the tenant's fail mode, `timed_out: true`.

Callers are proven before anything else costs: a connection's request must arrive whole within
`header_timeout_s`, and connections still waiting for theirs have a budget of their own, apart
from the connections of callers whose requests are in (`proving_protocol`); the API key
(`callers.py`, which names the tenants its caller may use) is checked before a byte of the body is
read (401, and the connection is closed); then the body is read up to `max_body_bytes`, all of it
within `body_timeout_s` (413, 408); each key has a rate (429 with `Retry-After`) and a number of
requests at once (429). Every error has OpenAI's shape. `/healthz` is liveness, `/readyz` whether
verdicts can arrive; they need no key.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
import uuid
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from guardstream.callers import ApiKey, ApiKeys, InFlight, Limits
from guardstream.client import Guard, Outcome, conversation
from guardstream.schemas import Action, RiskLevel

OPENAI_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
                     "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
                     "violence/graphic")
# Qwen3Guard's categories as OpenAI names them; the rest have no OpenAI name and are in `qwen3guard` only
AS_OPENAI = {"Violent": ("violence",), "Non-violent Illegal Acts": ("illicit",), "Sexual Content or Sexual Acts": ("sexual",),
             "Suicide & Self-Harm": ("self-harm",), "Unethical Acts": ("hate", "harassment")}
MAX_INPUTS = 32


class TextPart(BaseModel):
    type: str
    text: str | None = None


class ModerationRequest(BaseModel):
    input: str | list[str] | list[TextPart]
    model: str | None = None


def texts_of(request: ModerationRequest) -> list[str]:
    items = [request.input] if isinstance(request.input, str) else request.input
    if not items or len(items) > MAX_INPUTS:
        raise HTTPException(400, f"`input` needs 1 to {MAX_INPUTS} texts")
    texts = []
    for item in items:
        if isinstance(item, TextPart) and (item.type != "text" or item.text is None):
            raise HTTPException(400, f"guardstream moderates text only: an input part of type {item.type!r} cannot be judged")
        texts.append(item.text if isinstance(item, TextPart) else item)
    return texts


def unsafe_score(outcome: Outcome) -> float:
    """How sure the model is that the input is unsafe: its probability when it reports one."""
    verdict = outcome.verdict
    if verdict is None:
        return 0.0
    if verdict.probabilities and "Unsafe" in verdict.probabilities:
        return verdict.probabilities["Unsafe"]
    return {RiskLevel.unsafe: 1.0, RiskLevel.controversial: 0.5}.get(verdict.risk_level, 0.0)


def as_result(outcome: Outcome) -> dict:
    verdict = outcome.verdict
    named = {name for c in (verdict.categories if verdict else []) for name in AS_OPENAI.get(c, ())}
    score = unsafe_score(outcome)
    return {
        "flagged": outcome.action in (Action.block, Action.stop),
        "categories": {c: c in named for c in OPENAI_CATEGORIES},
        "category_scores": {c: score if c in named else 0.0 for c in OPENAI_CATEGORIES},
        "category_applied_input_types": {c: ["text"] for c in OPENAI_CATEGORIES},
        "qwen3guard": {
            "risk_level": verdict.risk_level.value if verdict else None,
            "categories": verdict.categories if verdict else [],
            "action": outcome.action.value,
            "probabilities": verdict.probabilities if verdict else None,
            "verdict_id": verdict.verdict_id if verdict else None,
            "timed_out": outcome.timed_out,
            "policy_version": verdict.policy_version if verdict else None,
            "observed": outcome.would_action is not None,  # observe mode: allowed, and what would have been done
            "would_action": outcome.would_action.value if outcome.would_action else None,
        },
    }


def as_openai_error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """Errors in OpenAI's shape, which the clients and gateways read `error.message` from."""
    kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status,
                        headers=headers)


OPEN_PATHS = ("/healthz", "/readyz")  # probes: no key, no body


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    value = dict(headers).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class Edge:
    """Proves the caller, then reads the body, before the app sees the request: the key from the
    headers alone (401 at once, the connection closed: an unknown caller's body is never read), then
    the body up to `limits.max_body_bytes` (413, at once when Content-Length says so), all of it
    within `limits.body_timeout_s` (408). The key found is `scope["state"]["api_key"]`."""

    def __init__(self, app, limits: Limits, keys: ApiKeys | None):
        self.app, self.limits, self.keys = app, limits, keys

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.keys is not None and scope["path"] not in OPEN_PATHS:
            token = bearer_token(scope["headers"])
            found = self.keys.find(token) if token else None
            if found is None:
                message = "an API key is needed: send `Authorization: Bearer <key>`" if token is None else \
                    "the API key is not known"
                return await self._refuse(scope, receive, send, 401, message, {"WWW-Authenticate": "Bearer"})
            scope.setdefault("state", {})["api_key"] = found
        limit = self.limits.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        # compared as digits first: int() of a header of thousands of digits would raise (a 500)
        if declared.isdigit() and (len(declared.lstrip(b"0")) > len(str(limit)) or int(declared) > limit):
            return await self._refuse(scope, receive, send, 413, f"the declared body is over the limit of {limit} bytes")
        body, more = bytearray(), True
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > limit:
                        return await self._refuse(scope, receive, send, 413, f"the body is over the limit of {limit} bytes")
        except TimeoutError:
            return await self._refuse(scope, receive, send, 408,
                                      f"the body did not arrive whole within {self.limits.body_timeout_s:g}s")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, message: str, headers: dict | None = None) -> None:
        await as_openai_error(status, message, {"Connection": "close", **(headers or {})})(scope, receive, send)


def proving_protocol(budget: int, header_timeout_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol, with connections that have not yet sent a whole request counted
    apart: at most `budget` of them at once (a new one closes the oldest) and none for longer than
    `header_timeout_s`. Until its request is in, a connection is not one of uvicorn's (whose
    `limit_concurrency` then answers 503), so slow or silent strangers cannot take the connections
    that callers with keys need: their requests arrive whole at once and are counted there."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting: dict[H11Protocol, asyncio.TimerHandle] = {}  # oldest first

    class ProvingH11(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.connections.discard(self)
            if len(waiting) >= budget:
                next(iter(waiting))._cut()
            waiting[self] = self.loop.call_later(header_timeout_s, self._cut)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self in waiting and self.scope is not None:  # its request is in: the app proves its key next
                waiting.pop(self).cancel()
                self.connections.add(self)

        def connection_lost(self, exc) -> None:
            if self in waiting:
                waiting.pop(self).cancel()
            super().connection_lost(exc)

        def _cut(self) -> None:
            waiting.pop(self).cancel()
            self.transport.close()

    return ProvingH11


class Admission:
    """Each key's rate (a moving window, `limits`) and requests at once."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._windows = MovingWindowRateLimiter(MemoryStorage())
        self._busy = InFlight()

    @asynccontextmanager
    async def admitted(self, key: ApiKey):
        rate = parse_rate(key.rate or self.limits.rate)
        if not self._windows.hit(rate, key.name):
            reset = self._windows.get_window_stats(rate, key.name).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            raise HTTPException(429, f"key {key.name} is over its rate of {rate}", {"Retry-After": str(wait)})
        most = key.concurrency or self.limits.concurrency
        if self._busy.count(key.name) >= most:
            raise HTTPException(429, f"key {key.name} already has {most} requests in flight", {"Retry-After": "1"})
        with self._busy.held(key.name):
            yield


def create_api(guard: Guard, keys: ApiKeys | None, timeout_s: float, limits: Limits = Limits(),
               default_tenant: str = "default") -> FastAPI:
    """The endpoint. `keys` None: no authentication (loopback only, `--insecure-no-auth`), every
    request is `default_tenant`'s or names its own."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await guard.start()
        try:
            yield
        finally:
            await guard.stop()

    api = FastAPI(title="guardstream moderation", lifespan=lifespan)
    api.add_middleware(Edge, limits=limits, keys=keys)
    admission = Admission(limits)

    @api.exception_handler(StarletteHTTPException)
    async def openai_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return as_openai_error(exc.status_code, str(exc.detail), exc.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        return as_openai_error(400, f"not a moderation request: {'.'.join(map(str, error['loc']))}: {error['msg']}")

    def caller_key(request: Request) -> ApiKey | None:
        """The key `Edge` proved (None without keys)."""
        return request.scope.get("state", {}).get("api_key")

    async def admitted_key(key: ApiKey | None = Depends(caller_key)):
        if key is None:
            yield None
            return
        async with admission.admitted(key):
            yield key

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        ok, detail = guard.readiness()
        return JSONResponse({"ok": ok, "detail": detail}, status_code=200 if ok else 503)

    @api.post("/v1/moderations")
    async def moderations(request: ModerationRequest, key: ApiKey | None = Depends(admitted_key),
                          x_guardstream_tenant: str | None = Header(default=None)) -> dict:
        if key is None:
            tenant = x_guardstream_tenant or default_tenant
        elif x_guardstream_tenant is None or x_guardstream_tenant in key.tenants:
            tenant = x_guardstream_tenant or key.tenants[0]
        else:
            raise HTTPException(403, f"key {key.name} may not act for tenant {x_guardstream_tenant[:64]!r}")
        texts = texts_of(request)
        try:
            events = [conversation(f"api-{uuid.uuid4().hex}", tenant, text) for text in texts]
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(map(str, error["loc"])) or "input"
            raise HTTPException(400, f"not a moderation request guardstream can send: {field}: {error['msg']}") from None
        outcomes = await asyncio.gather(*(guard.moderate(event, timeout=timeout_s) for event in events))
        model = next((o.verdict.model_id for o in outcomes if o.verdict), request.model or "qwen3guard")
        return {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": [as_result(o) for o in outcomes]}

    return api


def caller_keys(api_keys_source: str | None, insecure_no_auth: bool, host: str) -> ApiKeys | None:
    """The keys callers must present. None (no authentication) only when asked for, on a loopback
    host, where no other machine can reach it; ValueError says what is missing."""
    if api_keys_source:
        try:
            return ApiKeys.from_source(api_keys_source)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--api-keys: {exc}") from None
    if not insecure_no_auth:
        raise ValueError("no API keys: make one with `guardstream keys new --tenant T` and pass the file with "
                         "--api-keys (or GUARDSTREAM_API_KEYS); --insecure-no-auth serves without, on loopback only")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"--insecure-no-auth serves only on a loopback --host (127.0.0.1, ::1), not {host}")
    return None


def serve_api(api: FastAPI, host: str, port: int, limits: Limits, max_connections: int) -> None:
    """Run the endpoint until stopped: callers proven first (`proving_protocol`), small header
    events, short keep-alive."""
    uvicorn.run(api, host=host, port=port, log_level="info", limit_concurrency=max_connections, timeout_keep_alive=5,
                h11_max_incomplete_event_size=64 * 1024,
                http=proving_protocol(limits.unproven_connections, limits.header_timeout_s))

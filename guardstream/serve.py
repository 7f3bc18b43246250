"""An OpenAI-compatible moderation endpoint over the pipeline: `POST /v1/moderations`.

Gateways that already call OpenAI's moderation API (LiteLLM, agentgateway, Envoy AI Gateway) use
guardstream by changing the base URL. Each input is a user prompt, sent through the client as a
conversation event and judged by Qwen3Guard-Gen in the workers; the answer has OpenAI's shape,
plus a `qwen3guard` object with what OpenAI's categories cannot say (PII, politically sensitive,
copyright, jailbreak; the risk level and the tenant policy's action). `flagged` means the action is
block (or stop); a verdict that does not come in time is the tenant's fail mode, `timed_out: true`.
The tenant is the `X-Guardstream-Tenant` header, or the server's default.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

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
        },
    }


def as_openai_error(status: int, message: str) -> JSONResponse:
    """Errors in OpenAI's shape, which the clients and gateways read `error.message` from."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status)


def create_api(guard: Guard, default_tenant: str, timeout_s: float) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await guard.start()
        try:
            yield
        finally:
            await guard.stop()

    api = FastAPI(title="guardstream moderation", lifespan=lifespan)

    @api.exception_handler(HTTPException)
    async def openai_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return as_openai_error(exc.status_code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        return as_openai_error(400, f"not a moderation request: {'.'.join(map(str, error['loc']))}: {error['msg']}")

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @api.post("/v1/moderations")
    async def moderations(request: ModerationRequest, x_guardstream_tenant: str | None = Header(default=None)) -> dict:
        tenant = x_guardstream_tenant or default_tenant
        try:
            events = [conversation(f"api-{uuid.uuid4().hex}", tenant, text) for text in texts_of(request)]
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(map(str, error["loc"])) or "input"
            raise HTTPException(400, f"not a moderation request guardstream can send: {field}: {error['msg']}") from None
        outcomes = await asyncio.gather(*(guard.moderate(event, timeout=timeout_s) for event in events))
        model = next((o.verdict.model_id for o in outcomes if o.verdict), request.model or "qwen3guard")
        return {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": [as_result(o) for o in outcomes]}

    return api

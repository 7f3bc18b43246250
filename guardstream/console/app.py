"""The console's pages: sign in with a reviewer key, the queue, an item and its decision.

Every page is rendered on the server with Jinja2's autoescaping, so an item's text (which a user
wrote, and may be hostile) is only ever text. Every response carries a Content-Security-Policy
that allows no inline script or style and nothing from elsewhere; every form that changes
something carries the session's CSRF token, checked before anything is done; a reviewer sees and
decides only items of the tenants of their key, whatever the URL says (another tenant's item is
"not found"). A claim holds an item under a lease (`ReviewStore.claim`); a decision needs it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import asynccontextmanager
from datetime import timedelta, timezone
from pathlib import Path
from typing import Annotated

import psycopg
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi import Path as InPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from guardstream.callers import ApiKeys
from guardstream.console.outbox import DecisionOutbox
from guardstream.console.sessions import COOKIE, SIGNIN_COOKIE, Reviewer, Sessions
from guardstream.schemas import RiskLevel
from guardstream.schemas.labels import QUERY_CATEGORIES
from guardstream.workers.sinks.review import LeaseLost, ReviewStore

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
MAX_BODY_BYTES = 64 * 1024  # a form: a decision, its categories and a note
MAX_NOTE = 2000
ITEM_ID = InPath(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
RISKS = [r.value for r in RiskLevel]


class Guarded:
    """ASGI middleware: the security headers on every response, and a body over `MAX_BODY_BYTES`
    refused (413) before the form is parsed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return await Response("the form is too large", 413, headers=HEADERS)(scope, receive, send)
        seen = 0

        async def bounded():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise HTTPException(413, "the form is too large")
            return message

        async def headed(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in HEADERS.items())]
            await send(message)

        await self.app(scope, bounded, headed)


class SignInNeeded(Exception):
    pass


def create_console(store: ReviewStore, outbox: DecisionOutbox | None, keys: ApiKeys, secret: bytes, *,
                   session_hours: float = 8, lease_s: float = 300, secure_cookie: bool = True) -> FastAPI:
    """The console's app. `outbox` None: decisions are stored and left for another console's outbox."""
    sessions = Sessions(secret, session_hours * 3600)
    lease = timedelta(seconds=lease_s)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["utc"] = lambda when, form="%Y-%m-%d %H:%M:%S": when.astimezone(timezone.utc).strftime(form) + " UTC"

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        republish = None
        if outbox is not None:
            republish = asyncio.create_task(outbox.run())
        try:
            yield
        finally:
            if republish is not None:
                republish.cancel()
                await asyncio.gather(republish, return_exceptions=True)
                await outbox.stop()
            await store.close()

    app = FastAPI(title="guardstream review", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guarded)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, template, context, status_code=status)

    def reviewer(request: Request) -> Reviewer:
        found = sessions.read(request.cookies.get(COOKIE), keys)
        if found is None:
            raise SignInNeeded()
        return found

    def checked(request: Request, csrf: Annotated[str | None, Form()] = None) -> Reviewer:
        """The reviewer of a form that changes something, whose CSRF token is the session's."""
        found = reviewer(request)
        if not sessions.valid(sessions.csrf(found), csrf):
            raise HTTPException(403, "this form has no valid CSRF token: reload the page and try again")
        return found

    @app.exception_handler(SignInNeeded)
    async def to_signin(request: Request, _exc: SignInNeeded) -> Response:
        if request.method == "GET":
            return RedirectResponse("/signin", 303)
        return page(request, "message.html", 401, title="Signed out", message="Your session ended: sign in again.")

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, exc: StarletteHTTPException) -> Response:
        return page(request, "message.html", exc.status_code, title=f"{exc.status_code}", message=str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_form(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return page(request, "message.html", 400, title="Not understood", message=problems)

    @app.exception_handler(psycopg.Error)
    async def database_away(request: Request, exc: psycopg.Error) -> Response:
        log.warning("review console: the database: %s: %s", type(exc).__name__, exc)
        return page(request, "message.html", 503, title="The queue is unavailable",
                    message="The review database did not answer; try again in a moment.")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        problems = []
        try:
            await asyncio.wait_for(store.depth(), 5)
        except Exception as exc:
            problems.append(f"the review database: {type(exc).__name__}")
        if outbox is not None and outbox.failing:
            problems.append(outbox.failing)
        return JSONResponse({"ready": not problems, "problems": problems}, 503 if problems else 200)

    @app.get("/signin")
    async def signin_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        response = page(request, "signin.html", csrf=sessions.signin_csrf(nonce))
        response.set_cookie(SIGNIN_COOKIE, nonce, max_age=3600, httponly=True, secure=secure_cookie, samesite="strict")
        return response

    @app.post("/signin")
    async def signin(request: Request, key: Annotated[str, Form(max_length=200)],
                     csrf: Annotated[str | None, Form()] = None) -> Response:
        nonce = request.cookies.get(SIGNIN_COOKIE)
        if nonce is None or not sessions.valid(sessions.signin_csrf(nonce), csrf):
            raise HTTPException(403, "the sign-in form has no valid CSRF token: reload it and try again")
        found = keys.find(key.strip())
        if found is None:
            return page(request, "signin.html", 401, csrf=csrf, error="That is not a reviewer key of this console.")
        response = RedirectResponse("/queue", 303)
        response.set_cookie(COOKIE, sessions.open(found), max_age=int(sessions.lifetime_s), httponly=True,
                            secure=secure_cookie, samesite="strict")
        response.delete_cookie(SIGNIN_COOKIE)
        return response

    @app.post("/signout")
    async def signout(_who: Reviewer = Depends(checked)) -> Response:
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/queue", 303)

    def tenants_of(who: Reviewer, tenant: str | None) -> list[str]:
        if tenant and not who.may_review(tenant):
            raise HTTPException(404, f"no tenant {tenant!r} among yours")
        return [tenant] if tenant else list(who.tenants)

    @app.get("/queue")
    async def queue(request: Request, tenant: str | None = None, risk: str | None = None, decided: str | None = None,
                    empty: bool = False, who: Reviewer = Depends(reviewer)) -> Response:
        risk = risk if risk in RISKS else None
        items = await store.queue(tenants_of(who, tenant), risk=risk)
        return page(request, "queue.html", who=who, csrf=sessions.csrf(who), items=items, tenant=tenant or "",
                    risk=risk or "", risks=RISKS, decided=decided, empty=empty)

    @app.post("/claim")
    async def claim_next(tenant: Annotated[str, Form(max_length=200)] = "", who: Reviewer = Depends(checked)) -> Response:
        item = await store.claim(tenants_of(who, tenant or None), who.name, lease)
        if item is None:
            return RedirectResponse(f"/queue?empty=true&tenant={tenant}" if tenant else "/queue?empty=true", 303)
        return RedirectResponse(f"/items/{item['item_id']}", 303)

    async def visible(item_id: str, who: Reviewer) -> dict:
        item = await store.item(item_id, list(who.tenants))
        if item is None:
            raise HTTPException(404, "no such item among your tenants' items")
        return item

    @app.get("/items/{item_id}")
    async def item_page(request: Request, item_id: Annotated[str, ITEM_ID], who: Reviewer = Depends(reviewer)) -> Response:
        item = await visible(item_id, who)
        return page(request, "item.html", who=who, csrf=sessions.csrf(who), item=item, categories=QUERY_CATEGORIES,
                    mine=item["lease_holder"] == who.name and not item["decided_at"] and item["lease_until"] is not None,
                    probabilities=sorted((item["probabilities"] or {}).items(), key=lambda kv: -kv[1]))

    @app.post("/items/{item_id}/claim")
    async def claim_item(item_id: Annotated[str, ITEM_ID], who: Reviewer = Depends(checked)) -> Response:
        await visible(item_id, who)
        if await store.claim(list(who.tenants), who.name, lease, item_id=item_id) is None:
            raise HTTPException(409, "another reviewer holds this item, or it is decided, or you hold another: "
                                     "decide or release yours first")
        return RedirectResponse(f"/items/{item_id}", 303)

    @app.post("/items/{item_id}/release")
    async def release(item_id: Annotated[str, ITEM_ID], who: Reviewer = Depends(checked)) -> Response:
        await visible(item_id, who)
        await store.release(item_id, who.name)
        return RedirectResponse("/queue", 303)

    @app.post("/items/{item_id}/decide")
    async def decide(request: Request, item_id: Annotated[str, ITEM_ID],
                     decision: Annotated[str, Form(pattern="^(uphold|overturn)$")],
                     category: Annotated[list[str] | None, Form()] = None,
                     note: Annotated[str, Form(max_length=MAX_NOTE)] = "", who: Reviewer = Depends(checked)) -> Response:
        await visible(item_id, who)
        chosen = list(dict.fromkeys(category or []))
        if unknown := [c for c in chosen if c not in QUERY_CATEGORIES]:
            raise HTTPException(400, f"unknown categories: {', '.join(unknown)}")
        try:
            decided = await store.decide(item_id, who.name, decision, chosen, note.strip() or None)
        except LeaseLost:
            return page(request, "message.html", 409, title="Your lease on this item ended",
                        message="It went back to the queue (another reviewer may hold it now); claim it again to decide it.")
        if outbox is not None:
            await outbox.publish([decided])  # on failure it stays in the outbox, published on a later round
        return RedirectResponse(f"/queue?decided={item_id}", 303)

    return app


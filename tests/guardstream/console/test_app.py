"""The console's pages before any database read: every response carries the security headers,
sign-in needs its form's CSRF token and a reviewer key, a page needs a session, a form over the
size limit is refused unread, and readiness says when the database does not answer."""

import re

import pytest
from fastapi.testclient import TestClient

from guardstream.callers import REVIEW_KEY_PREFIX, ApiKeys, new_key
from guardstream.console.app import MAX_BODY_BYTES, create_console
from guardstream.workers.sinks.review import ReviewStore

NOWHERE = "postgresql://reviewer:x@127.0.0.1:1/none"  # nothing listens on port 1


@pytest.fixture
def client():
    key, entry = new_key("ann", ["acme"], REVIEW_KEY_PREFIX)
    app = create_console(ReviewStore(NOWHERE, connect_timeout=2), None, ApiKeys(keys=[entry]), b"s" * 32,
                         secure_cookie=False)
    with TestClient(app) as client:
        client.key = key
        yield client


def signin_token(client) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text).group(1)


def test_every_response_carries_a_strict_content_security_policy(client):
    for answer in (client.get("/signin"), client.get("/nowhere"), client.get("/healthz"), client.get("/static/console.js")):
        assert answer.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
    assert "unsafe-inline" not in client.get("/signin").headers["content-security-policy"]
    assert "<script>" not in client.get("/signin").text and " style=" not in client.get("/signin").text


def test_pages_need_a_session(client):
    answer = client.get("/queue", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/signin"
    assert client.get("/items/abc", follow_redirects=False).status_code == 303
    assert client.post("/claim", data={"csrf": "x"}).status_code == 401
    client.cookies.set("gs_review", "forged.cookie")
    assert client.get("/queue", follow_redirects=False).status_code == 303


def test_signing_in_needs_the_forms_token_and_a_reviewer_key(client):
    assert client.post("/signin", data={"key": client.key}).status_code == 403  # no token
    assert client.post("/signin", data={"key": client.key, "csrf": "made-up"}).status_code == 403
    refused = client.post("/signin", data={"key": "gsr-guess", "csrf": signin_token(client)})
    assert refused.status_code == 401 and "not a reviewer key" in refused.text and "gs_review" not in refused.cookies
    answer = client.post("/signin", data={"key": client.key, "csrf": signin_token(client)}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/queue"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_a_form_over_the_limit_is_refused_before_it_is_read(client):
    big = "x" * (MAX_BODY_BYTES + 1)
    assert client.post("/signin", data={"key": big, "csrf": signin_token(client)}).status_code == 413
    chunked = client.post("/signin", content=(part for part in [b"key=", big.encode()]),
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 413  # no length given: counted as it arrives


def test_readiness_says_the_database_does_not_answer(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json()["problems"] == ["the review database: OperationalError"]

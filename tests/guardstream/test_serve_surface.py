"""`guardstream serve`'s edge without a broker (a fake Guard): keys, tenants bound to keys, bodies
bounded while they are read, per-key rate and concurrency, and every error in OpenAI's shape. The
real server, with the `openai` client and the pipeline behind it, is `test_serve.py`."""

import asyncio
import socket
import time

import httpx
import uvicorn
import pytest

from guardstream.callers import ApiKey, ApiKeys, Limits, new_key
from guardstream.client import Outcome
from guardstream.schemas import Action
from guardstream.serve import create_api, proving_protocol

EU_KEY, EU = new_key("gateway-eu", ["acme", "acme-eu"])
US_KEY, US = new_key("gateway-us", ["globex"])
SLOW_KEY, SLOW = new_key("slow", ["initech"])
SLOW = SLOW.model_copy(update={"rate": "2/minute", "concurrency": 1})
KEYS = ApiKeys(keys=[EU, US, SLOW])


class FakeGuard:
    """Answers allow at once (or after `release` for tenants in `hold`), and remembers each request's tenant."""

    def __init__(self):
        self.tenants, self.ready, self.hold, self.release = [], (True, "reading verdicts"), set(), asyncio.Event()

    async def start(self):
        pass

    async def stop(self):
        pass

    def readiness(self):
        return self.ready

    async def moderate(self, event, timeout=None):
        self.tenants.append(event.tenant)
        if event.tenant in self.hold:
            await self.release.wait()
        return Outcome(Action.allow, reason="timeout")


async def call(guard, *requests, limits=Limits(), keys=KEYS):
    """Each request (method, path, headers, body) against a fresh app; the responses in order."""
    api = create_api(guard, keys, 5, limits)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://serve") as client:
        return [await client.request(method, path, headers=headers, content=body) for method, path, headers, body in requests]


def moderation(key: str | None = EU_KEY, tenant: str | None = None, body: bytes | object = b'{"input": "hi"}'):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if tenant is not None:
        headers["X-Guardstream-Tenant"] = tenant
    return "POST", "/v1/moderations", headers, body


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_a_key_is_needed_and_its_tenants_are_the_only_ones_it_may_name():
    guard = FakeGuard()
    none, unknown, own, other_own, foreign, us = asyncio.run(call(
        guard, moderation(None), moderation("gsk-made-up"), moderation(), moderation(tenant="acme-eu"),
        moderation(tenant="globex"), moderation(US_KEY)))
    assert none.status_code == unknown.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert error_of(none)["type"] == "authentication_error" and "not known" in error_of(unknown)["message"]
    assert own.status_code == other_own.status_code == us.status_code == 200
    assert foreign.status_code == 403 and "globex" in error_of(foreign)["message"]
    assert guard.tenants == ["acme", "acme-eu", "globex"]  # the key's first tenant unless it names another of its own


def test_keys_are_stored_as_hashes_and_checked_whatever_their_form():
    assert EU_KEY not in KEYS.model_dump_json() and KEYS.find(EU_KEY) == EU and KEYS.find(EU_KEY + "x") is None
    assert KEYS.find("") is None
    with pytest.raises(ValueError):
        ApiKey(name="k", sha256="0" * 64, tenants=["has space"])
    with pytest.raises(ValueError):
        ApiKey(name="k", sha256="0" * 64, tenants=["acme"], rate="very fast")


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    async def chunked():  # no Content-Length: counted while it is read
        for _ in range(64):
            yield b"x" * 1024

    guard, limits = FakeGuard(), Limits(max_body_bytes=16 * 1024)
    declared, streamed, fits = asyncio.run(call(
        guard, moderation(body=b"x" * (32 * 1024)), moderation(body=chunked()),
        moderation(body=b'{"input": "' + b"y" * 1000 + b'"}'), limits=limits))
    assert declared.status_code == streamed.status_code == 413 and "limit" in error_of(declared)["message"]
    assert fits.status_code == 200 and guard.tenants == ["acme"]
    [absurd] = asyncio.run(call(guard, ("POST", "/v1/moderations", {**moderation()[2], "Content-Length": "9" * 5000},
                                        b"{}"), limits=limits))
    assert absurd.status_code == 413  # a length of 5,000 digits, which int() refuses to parse


def test_a_body_that_trickles_is_cut_off_at_the_whole_bodys_deadline():
    async def trickles():  # a piece every 0.1 s: each in time, the whole never
        yield b'{"input": "'
        for _ in range(30):
            await asyncio.sleep(0.1)
            yield b"x"
        yield b'"}'

    began = time.monotonic()
    [stalled] = asyncio.run(call(FakeGuard(), moderation(body=trickles()), limits=Limits(body_timeout_s=0.5)))
    assert stalled.status_code == 408 and "did not arrive whole within 0.5s" in error_of(stalled)["message"]
    assert time.monotonic() - began < 2.5


def test_a_key_past_its_rate_or_concurrency_gets_429_with_retry_after():
    guard = FakeGuard()

    async def run():
        api = create_api(guard, KEYS, 5, Limits())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://serve") as client:
            def send(key):
                method, path, headers, body = moderation(key)
                return client.request(method, path, headers=headers, content=body)

            guard.hold = {"initech"}
            first = asyncio.create_task(send(SLOW_KEY))
            await asyncio.sleep(0.2)
            busy, others = await send(SLOW_KEY), await send(EU_KEY)
            guard.release.set()
            return busy, others, await first, await send(SLOW_KEY)

    busy, others, done, over = asyncio.run(run())
    assert done.status_code == others.status_code == 200  # another key is not held back by this one's limits
    assert busy.status_code == 429 and "in flight" in error_of(busy)["message"] and busy.headers["retry-after"] == "1"
    assert over.status_code == 429 and error_of(over)["type"] == "rate_limit_error"
    assert 1 <= int(over.headers["retry-after"]) <= 60  # 2/minute: the window frees a slot within the minute


def test_garbage_unknown_paths_and_bad_input_answer_in_openais_shape():
    garbage, no_input, unknown, wrong_method, image = asyncio.run(call(
        FakeGuard(), moderation(body=b"{not json"), moderation(body=b"{}"),
        ("GET", "/v1/nothing", {"Authorization": f"Bearer {EU_KEY}"}, None),
        ("GET", "/v1/moderations", {"Authorization": f"Bearer {EU_KEY}"}, None),
        moderation(body=b'{"input": [{"type": "image_url", "image_url": {"url": "x"}}]}')))
    assert garbage.status_code == no_input.status_code == image.status_code == 400
    assert "not a moderation request" in error_of(garbage)["message"] and "input" in error_of(no_input)["message"]
    assert "text only" in error_of(image)["message"]
    assert unknown.status_code == 404 and error_of(unknown)["type"] == "invalid_request_error"
    assert wrong_method.status_code == 405 and error_of(wrong_method)


def test_readyz_says_whether_verdicts_can_arrive_and_healthz_stays_liveness():
    guard = FakeGuard()
    guard.ready = (False, "the verdict reader is down (restarting)")
    ready, live = asyncio.run(call(guard, ("GET", "/readyz", {}, None), ("GET", "/healthz", {}, None)))
    assert ready.status_code == 503 and ready.json() == {"ok": False, "detail": "the verdict reader is down (restarting)"}
    assert live.status_code == 200


def test_strangers_cannot_hold_the_connections_that_keyed_callers_need():
    """On a real uvicorn with 8 connections: 24 connections that never finish their headers, and 6
    without a key that declare a 500 kB body and send none. The latter are answered 401 at once (no
    body is waited for); the former are closed by the header deadline or by newer strangers; and a
    keyed gateway's requests all succeed meanwhile."""
    guard = FakeGuard()

    async def run():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        limits = Limits(header_timeout_s=1.5)
        server = uvicorn.Server(uvicorn.Config(create_api(guard, KEYS, 5, limits), host="127.0.0.1", port=port,
                                               limit_concurrency=8, lifespan="off", log_level="warning",
                                               http=proving_protocol(4, limits.header_timeout_s)))
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(24)]
            for _, writer in silent:
                writer.write(b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\n")  # and nothing more
            began = time.monotonic()
            unkeyed = []
            for _ in range(6):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /v1/moderations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 500000\r\n\r\n")
                unkeyed.append((await asyncio.wait_for(reader.read(4096), 5), time.monotonic() - began))
                writer.close()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                keyed = [await client.post("/v1/moderations", json={"input": "hi"},
                                           headers={"Authorization": f"Bearer {EU_KEY}"}) for _ in range(10)]
            closed = [await asyncio.wait_for(reader.read(), 5) for reader, _ in silent]  # b"": closed by the server
            return unkeyed, keyed, closed, time.monotonic() - began
        finally:
            server.should_exit = True
            await serving

    unkeyed, keyed, closed, took = asyncio.run(run())
    assert all(answer.startswith(b"HTTP/1.1 401") and after < 1.0 for answer, after in unkeyed), unkeyed
    assert [r.status_code for r in keyed] == [200] * 10
    assert closed == [b""] * 24 and took < 5

"""`guardstream serve` as a gateway and an attacker see it: OpenAI's own client and raw HTTP against
POST /v1/moderations, answered by the real pipeline (the edge alone, with a fake Guard, is
`test_serve_surface.py`)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai
import psutil
import pytest
from openai.types import ModerationCreateResponse

from guardstream.callers import ApiKeys, new_key
from guardstream.dev.broker import free_port
from guardstream.dev.tiny_checkpoints import load_corpus

from tests.helpers.pipeline import POLICY

pytestmark = pytest.mark.integration

GATEWAY_KEY, GATEWAY = new_key("gateway", ["gw-strict", "gw-loose"])
LIMITED_KEY, LIMITED = new_key("limited", ["gw-strict"])
KEYS = ApiKeys(keys=[GATEWAY, LIMITED.model_copy(update={"rate": "3/minute"})])


@dataclass
class Endpoint:
    url: str
    pid: int


@pytest.fixture(scope="module")
def endpoint(worker, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GUARDSTREAM_TOPIC_PREFIX": "it.", "GUARDSTREAM_POLICY": json.dumps(POLICY),
           "GUARDSTREAM_API_KEYS": KEYS.model_dump_json()}
    with open(log, "w") as out:
        server = subprocess.Popen([str(Path(sys.executable).with_name("guardstream")), "serve", "--bootstrap", worker.bootstrap,
                                   "--port", str(port), "--timeout", "120"],
                                  stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
        yield Endpoint(f"http://127.0.0.1:{port}/v1", server.pid)
    finally:
        server.terminate()
        server.wait(30)


def test_the_openai_client_gets_qwen3guard_verdicts(endpoint):
    prompts = [ex for ex in load_corpus("train") if ex.kind == "prompt"]
    unsafe = next(ex for ex in prompts if ex.label == "Unsafe" and ex.categories[0] in ("Violent", "Non-violent Illegal Acts"))
    safe = next(ex for ex in prompts if ex.label == "Safe")
    client = openai.OpenAI(base_url=endpoint.url, api_key=GATEWAY_KEY, max_retries=0, timeout=180)
    response = client.moderations.create(input=[unsafe.messages[0]["content"], safe.messages[0]["content"]],
                                         model="qwen3guard")
    assert isinstance(response, ModerationCreateResponse)
    ModerationCreateResponse.model_validate(response.model_dump(by_alias=True), strict=False)  # every field OpenAI's type has
    flagged, clean = response.results
    assert flagged.flagged and not clean.flagged
    named = "violence" if unsafe.categories[0] == "Violent" else "illicit"
    assert getattr(flagged.categories, named) and getattr(flagged.category_scores, named) > 0
    assert not any(clean.categories.model_dump().values())
    extra = flagged.model_extra["qwen3guard"]
    assert extra["risk_level"] == "Unsafe" and extra["action"] == "block" and extra["categories"] == unsafe.categories
    assert extra["policy_version"] == "gw-strict@0" and not extra["observed"] and extra["would_action"] is None
    assert clean.model_extra["qwen3guard"]["risk_level"] == "Safe" and not clean.model_extra["qwen3guard"]["timed_out"]


def test_a_tenant_header_and_bad_input(endpoint):
    client = openai.OpenAI(base_url=endpoint.url, api_key=GATEWAY_KEY, max_retries=0, timeout=180)
    prompt = next(ex for ex in load_corpus("train") if ex.kind == "prompt" and ex.label == "Unsafe"
                  and ex.categories[0] == "PII")  # gw-loose (fail-open, loose) sends PII to review: not flagged
    response = client.moderations.create(input=prompt.messages[0]["content"],
                                         extra_headers={"X-Guardstream-Tenant": "gw-loose"})
    assert not response.results[0].flagged and response.results[0].model_extra["qwen3guard"]["action"] == "review"
    with pytest.raises(openai.BadRequestError, match="text only"):
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    with pytest.raises(openai.PermissionDeniedError, match="may not act for tenant"):
        client.moderations.create(input="hi", extra_headers={"X-Guardstream-Tenant": "no spaces allowed"})


def test_without_a_known_key_nothing_is_moderated_and_no_tenant_can_be_named(endpoint):
    unsafe = next(ex for ex in load_corpus("train") if ex.kind == "prompt" and ex.label == "Unsafe"
                  and ex.categories[0] == "PII")
    for key in ("unused", "gsk-" + "A" * 43):  # (no key at all: test_serve_surface)
        client = openai.OpenAI(base_url=endpoint.url, api_key=key, max_retries=0, timeout=30)
        with pytest.raises(openai.AuthenticationError):
            client.moderations.create(input=unsafe.messages[0]["content"], extra_headers={"X-Guardstream-Tenant": "gw-loose"})
    limited = openai.OpenAI(base_url=endpoint.url, api_key=LIMITED_KEY, max_retries=0, timeout=180)
    with pytest.raises(openai.PermissionDeniedError):  # the looser tenant belongs to another key
        limited.moderations.create(input=unsafe.messages[0]["content"], extra_headers={"X-Guardstream-Tenant": "gw-loose"})
    flagged = limited.moderations.create(input=unsafe.messages[0]["content"]).results[0]
    assert flagged.flagged and flagged.model_extra["qwen3guard"]["action"] == "block"
    with pytest.raises(openai.RateLimitError) as over:  # 3/minute: two more, then refused
        for _ in range(3):
            limited.moderations.create(input="hi")
    assert int(over.value.response.headers["retry-after"]) >= 1


def post_raw(url: str, body_bytes: int, chunked: bool) -> int:
    """POST a body of `body_bytes` (declared, or chunked without a length) as fast as the server takes
    it; the status it answers with."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", "/v1/moderations")
    conn.putheader("Authorization", f"Bearer {GATEWAY_KEY}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader(*(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(body_bytes))))
    conn.endheaders()
    piece = b'"' + b"x" * (64 * 1024 - 2) + b'"'
    try:
        for _ in range(body_bytes // len(piece)):
            conn.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: its answer is waiting
    status = conn.getresponse().status
    conn.close()
    return status


def test_a_20_mb_body_is_refused_without_being_held(endpoint):
    server = psutil.Process(endpoint.pid)
    before = server.memory_info().rss
    statuses = [post_raw(endpoint.url, 20 << 20, chunked) for chunked in (False, True)]
    grew = server.memory_info().rss - before
    print(f"serve: two 20 MB bodies (declared, chunked) refused with {statuses}; RSS grew {grew / 2**20:.1f} MB")
    assert statuses == [413, 413]
    assert grew < 20 << 20, f"the server grew by {grew >> 20} MB for two 20 MB bodies it refused"

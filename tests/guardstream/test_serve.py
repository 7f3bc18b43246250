"""`guardstream serve` as a gateway sees it: OpenAI's own client against POST /v1/moderations,
answered by the real pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from openai.types import ModerationCreateResponse

from guardstream.dev.broker import free_port
from guardstream.dev.tiny_checkpoints import load_corpus

from tests.helpers.pipeline import POLICY

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(worker, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "GUARDSTREAM_TOPIC_PREFIX": "it.", "GUARDSTREAM_POLICY": json.dumps(POLICY)}
    with open(log, "w") as out:
        server = subprocess.Popen([str(Path(sys.executable).with_name("guardstream")), "serve", "--bootstrap", worker.bootstrap,
                                   "--port", str(port), "--tenant", "gw-strict", "--timeout", "120"],
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
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(30)


def test_the_openai_client_gets_qwen3guard_verdicts(endpoint):
    prompts = [ex for ex in load_corpus("train") if ex.kind == "prompt"]
    unsafe = next(ex for ex in prompts if ex.label == "Unsafe" and ex.categories[0] in ("Violent", "Non-violent Illegal Acts"))
    safe = next(ex for ex in prompts if ex.label == "Safe")
    client = openai.OpenAI(base_url=endpoint, api_key="unused", max_retries=0, timeout=180)
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
    assert clean.model_extra["qwen3guard"]["risk_level"] == "Safe" and not clean.model_extra["qwen3guard"]["timed_out"]


def test_a_tenant_header_and_bad_input(endpoint):
    client = openai.OpenAI(base_url=endpoint, api_key="unused", max_retries=0, timeout=180)
    prompt = next(ex for ex in load_corpus("train") if ex.kind == "prompt" and ex.label == "Unsafe"
                  and ex.categories[0] == "PII")  # gw-loose (fail-open, loose) sends PII to review: not flagged
    response = client.moderations.create(input=prompt.messages[0]["content"],
                                         extra_headers={"X-Guardstream-Tenant": "gw-loose"})
    assert not response.results[0].flagged and response.results[0].model_extra["qwen3guard"]["action"] == "review"
    with pytest.raises(openai.BadRequestError, match="text only"):
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}])
    with pytest.raises(openai.BadRequestError, match="tenant"):
        client.moderations.create(input="hi", extra_headers={"X-Guardstream-Tenant": "no spaces allowed"})

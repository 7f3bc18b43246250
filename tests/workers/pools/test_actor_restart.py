"""A GenGuard actor killed mid-run is restarted by Ray and its call retried: no verdict is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from guardstream.dev.tiny_checkpoints import load_corpus

from tests.helpers.pipeline import wait_drained
from tests.helpers.kafka_helpers import produce, read_all

pytestmark = pytest.mark.integration

N = 60


def test_killing_the_gen_actor_loses_no_verdict(worker):
    (pid,) = worker.actor_pids("GenGuard")
    # prompts the fixture model was trained on, so an error verdict can only come from the restart
    prompts = [ex.messages for ex in load_corpus("train") if ex.kind == "prompt"]
    events = [{"event_id": f"kill-{i:03d}", "conversation_id": f"kill-conv-{i}", "tenant": "kill-tenant",
               "messages": prompts[i % len(prompts)]} for i in range(N)]
    produce(worker.settings, worker.bootstrap, events[: N // 2])
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    produce(worker.settings, worker.bootstrap, events[N // 2 :])
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "conversations", timeout_s=180))
    verdicts = read_all(worker.settings, worker.bootstrap, "verdicts", lambda v: v["source_event_id"].startswith("kill-"))
    # every event has its verdict; a batch slower than the consumer's stuck-head rule (30 s, as an
    # actor restart on a loaded machine can be) is delivered again, under the same verdict id
    assert sorted({v["source_event_id"] for v in verdicts}) == sorted(e["event_id"] for e in events)
    assert len({v["verdict_id"] for v in verdicts}) == N, "a duplicate verdict must carry its first copy's id"
    errors = {v["source_event_id"]: v["error"] for v in verdicts if v["error"]}
    assert not errors, f"a retried call on the restarted actor must give a real verdict: {errors}"
    assert worker.process.poll() is None

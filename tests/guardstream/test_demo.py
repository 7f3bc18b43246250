"""`make run` stays green on the embedded broker (Tansu): the demo answers every event, dead letter
and stream, each once, and its worker found Tansu and polled it as Tansu needs and stopped cleanly."""

import os
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from guardstream import EXAMPLES
from guardstream.schemas import ConversationEvent
from guardstream.wire.settings import TANSU_FETCH_WAIT_MS

pytestmark = pytest.mark.integration


def test_the_demo_answers_everything_on_the_embedded_broker(tiny, tmp_path):
    env = {**os.environ, "GUARDSTREAM_KAFKA_BOOTSTRAP": "", "GUARDSTREAM_HOME": str(tmp_path),
           "GUARDSTREAM_STREAM_MODEL": str(tiny.stream)}
    done = subprocess.run([sys.executable, "-m", "guardstream.cli", "demo", "--gen-model", str(tiny.gen), "--timeout",
                           "240"], env=env,
                          capture_output=True, text=True, timeout=420)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "done" in out and "dead letters" in out and "streams moderated token by token" in out, out[-4000:]
    # Faust's flow control clears its queues as the worker starts: what it clears is fetched again, and
    # only that, so each malformed line is one dead letter
    assert re.search(r"done.*, (\d+) dead letters", out).group(1) == str(malformed_examples()), out[-4000:]
    worker_log = (tmp_path / "worker.log").read_text()
    assert f"fetch wait {TANSU_FETCH_WAIT_MS} ms" in worker_log, worker_log[-3000:]
    assert "Traceback" not in worker_log and "AttributeError" not in worker_log, worker_log[-3000:]


def malformed_examples() -> int:
    lines = [line for line in (EXAMPLES / "conversations.jsonl").read_text().splitlines() if line.strip()]
    wrong = 0
    for line in lines:
        try:
            ConversationEvent.model_validate_json(line)
        except ValidationError:
            wrong += 1
    return wrong

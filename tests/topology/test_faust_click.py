"""faust-streaming 0.15.3 pins click<8.4, but huggingface-hub needs click>=8.4.2; we install
faust without its pin. This proves Faust's own click CLI still runs a worker that processes records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
import pytest
from packaging.version import Version

pytestmark = pytest.mark.integration


def test_click_is_new_enough_for_huggingface_hub():
    import huggingface_hub.cli  # noqa: F401  (imports click-based commands)

    assert Version(version("click")) >= Version("8.4.2")
    assert Version(version("faust-streaming")) == Version("0.15.3")


def test_faust_cli_worker_runs_with_this_click(broker, tmp_path):
    log_path = tmp_path / "faust.log"
    env = {**os.environ, "PROBE_BOOTSTRAP": broker.bootstrap, "PYTHONPATH": str(Path(__file__).parent)}
    asyncio.run(create_probe_topics(broker.bootstrap))
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "faust_probe", "worker", "-l", "info",
                                   "--without-web"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 90
        while "Worker ready" not in log_path.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        assert asyncio.run(echo_round_trip(broker.bootstrap)) == b"HELLO FROM CLICK 8.5"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert "Traceback" not in log_path.read_text(errors="replace")


async def create_probe_topics(bootstrap: str) -> None:
    """Before the worker joins: Faust assigns only topics that exist, and the reader looks for probe-out once."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("probe-in", 1, 1), NewTopic("probe-out", 1, 1)])
    finally:
        await admin.close()


async def echo_round_trip(bootstrap: str) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer("probe-out", bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait("probe-in", b"hello from click 8.5")
        message = await asyncio.wait_for(consumer.getone(), 60)
        return message.value
    finally:
        await producer.stop()
        await consumer.stop()

"""`guardstream bench pipeline` measures through a real worker (its numbers are never asserted):
a Gen-only worker with the no-op engine answers every event, and runs no other agent."""

import pytest

from guardstream.bench.pipeline import measure_pipeline
from guardstream.topology.settings import Settings

from tests.helpers.kafka_helpers import read_all

pytestmark = pytest.mark.integration


def test_a_gen_only_worker_with_the_noop_engine_answers_every_event(broker, tiny, tmp_path):
    log_path = tmp_path / "worker.log"
    measured = measure_pipeline("noop", broker.bootstrap, log_path, str(tiny.gen), events=96, batch=32, threads=1,
                                timeout_s=120, run="it-noop", agents="gen", gen_backend="noop",
                                kafka_rebalance_timeout_s=6, kafka_session_timeout_s=6)
    assert measured.count == 96 and measured.seconds > 0 and len(measured.latencies_ms) == 96
    log = log_path.read_text()
    assert "agents: gen; opening the model pool" in log and log.count("GenGuard ready") == 1 and "StreamGuard ready" not in log
    settings = Settings.load({}, topic_prefix="bench-it-noop.")
    verdicts = read_all(settings, broker.bootstrap, "verdicts")
    assert len(verdicts) == 32 + 96 + 96  # warm-up, burst, paced: one verdict per event
    assert {v["model_id"] for v in verdicts} == {"noop"} and {v["risk_level"] for v in verdicts} == {"Safe"}
    assert read_all(settings, broker.bootstrap, "actions", idle_timeout_s=1) == []  # no enforcement agent runs here

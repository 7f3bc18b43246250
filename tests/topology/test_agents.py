"""A worker of verdict sinks only (`agents=enforcement`) starts without models or Ray and still
does its job: a bad verdict record becomes a dead letter."""

import asyncio

import pytest

from tests.helpers.pipeline import start_worker, wait_drained
from tests.helpers.kafka_helpers import produce, read_all

pytestmark = pytest.mark.integration


def test_a_sinks_only_worker_loads_no_model_and_enforces(broker, tiny, tmp_path):
    worker = start_worker(broker.bootstrap, str(tiny.gen), tmp_path / "sinks.log", app_id="gs-sinks",
                          topic_prefix="sinks.", agents="enforcement", audit_store_text="false")
    try:
        log = worker.log()
        assert "agents: enforcement; loading no model" in log and "Ray" not in log
        produce(worker.settings, broker.bootstrap, [{"verdict_id": "not-a-verdict"}], role="verdicts")
        asyncio.run(wait_drained(worker.settings, broker.bootstrap, "verdicts"))
        letters = read_all(worker.settings, broker.bootstrap, "dlq")
        assert [d["error_code"] for d in letters] == ["invalid_schema"]
    finally:
        worker.stop()

"""A smoke of the gateway client and one worker on the newest Kafka 3.9 (what most managed clusters
still run): a prompt judged, a reply stream moderated to its final verdict, a malformed record
dead-lettered."""

from __future__ import annotations

import asyncio
import json

import pytest

from guardstream.client import Guard, conversation
from guardstream.dev.kafka import COMPAT, KafkaCluster
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import produce_lines
from guardstream.schemas import Action, RiskLevel
from guardstream.wire.policy import Policy

from tests.helpers.kafka_helpers import read_all
from tests.helpers.pipeline import POLICY, start_worker
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration


def test_the_client_and_a_worker_work_on_kafka_3_9(tiny, tmp_path):
    prompts = [ex for ex in load_corpus("train") if ex.kind == "prompt"]
    unsafe = next(ex for ex in prompts if ex.label == "Unsafe")
    with KafkaCluster(version=COMPAT, directory=tmp_path / "kafka") as cluster:
        worker = start_worker(cluster.bootstrap, str(tiny.gen), tmp_path / "worker.log", app_id="gs-compat",
                              topic_prefix="compat.", agents="gen,stream,enforcement", policy=json.dumps(POLICY))
        settings = worker.settings.model_copy(update={"policy": Policy.model_validate(POLICY)})
        try:
            async def run():
                async with Guard(cluster.bootstrap, settings, timeout_s=120, chunk_timeout_s=120) as guard:
                    judged = await guard.moderate(conversation("compat-1", "acme", unsafe.messages[0]["content"]))
                    async with guard.stream("compat-2", "tell me about the weather", tenant="acme") as reply:
                        await reply.push("It is sunny and warm today.")
                        ended = await reply.finish()
                    await produce_lines(settings, cluster.bootstrap, "conversations", ["{not json"])
                    return judged, ended

            judged, ended = asyncio.run(run())
            assert judged.verdict is not None and judged.verdict.risk_level is RiskLevel.unsafe
            assert judged.action is Action.block
            assert ended.verdict is not None and ended.verdict.stream.final
            eventually(lambda: read_all(settings, cluster.bootstrap, "dlq", idle_timeout_s=1), 60, "the dead letter")
            assert "Traceback" not in worker.log()
        finally:
            worker.stop()

"""The canary's reader without a broker: what it sends to the canary pool, what it holds
uncommitted until its pair is published, and what a canary that cannot start leaves running."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from guardstream import runtime
from guardstream.schemas import RiskLevel
from guardstream.topology.agents.canary import CanaryModels, CanaryReader
from guardstream.topology.settings import Settings
from guardstream.workers.moderation.canary import sampled
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.moderation.rules import GenRules
from guardstream.workers.engines.gen_engine import GenResult
from guardstream.workers.engines.gen_output import GenJudgement

SETTINGS = Settings.load({}, canary={"gen_model": "canary-model", "sample": 0.5, "join_timeout_s": 30})
IN, OUT = (next(f"c{i}" for i in range(100) if sampled(f"c{i}".encode(), 0.5) == chosen) for chosen in (True, False))


class CountingPool:
    """A canary pool that answers Unsafe, and notes what it was asked."""

    records_per_batch = 16

    def __init__(self):
        self.asked = 0

    async def classify(self, requests):
        self.asked += len(requests)
        return [GenResult(GenJudgement(RiskLevel.unsafe, ["Violent"], None), "", None, 0.0) for _ in requests]


def topic(name: str):
    return SimpleNamespace(get_topic_name=lambda: name)


def record(topic_name: str, offset: int, conversation: str, value: dict, headers=()) -> ConsumerRecord:
    raw = json.dumps(value).encode()
    return ConsumerRecord(topic_name, 0, offset, 0, 0, conversation.encode(), raw, None, len(conversation), len(raw),
                          list(headers))


def event(conversation: str, i: int) -> dict:
    return {"event_id": f"e{i}", "conversation_id": conversation, "tenant": "acme",
            "messages": [{"role": "user", "content": "hello"}]}


def main_verdict(conversation: str, i: int) -> dict:
    return {"verdict_id": f"v{i}", "source_event_id": f"e{i}", "conversation_id": conversation, "tenant": "acme",
            "moderate": "prompt", "model_id": "main-model", "model_variant": "gen", "risk_level": "Safe",
            "action": "allow", "policy": "tenant=acme", "latency_ms": 1.0}


def test_only_the_sample_reaches_the_canary_and_its_records_wait_for_their_pair():
    pool = CountingPool()
    w = SimpleNamespace(settings=SETTINGS, conversations=topic("g.conversations"), chunks=topic("g.chunks"),
                        verdicts=topic("g.verdicts"))
    reader = CanaryReader(w, CanaryModels(GenModerator(GenRules(), pool, "canary-model"), None))
    assert reader.topics == ["g.conversations", "g.verdicts"]
    conversations, verdicts = TopicPartition("g.conversations", 0), TopicPartition("g.verdicts", 0)

    pairs = asyncio.run(reader.handle({conversations: [record("g.conversations", 0, IN, event(IN, 0)),
                                                        record("g.conversations", 1, OUT, event(OUT, 1)),
                                                        record("g.conversations", 2, IN, event(IN, 2))]}))
    assert pool.asked == 2 and pairs == []  # the sampled two, waiting for the main verdicts
    assert reader.to_commit() == {conversations: 0}

    pairs = asyncio.run(reader.handle({verdicts: [record("g.verdicts", 0, IN, main_verdict(IN, 0)),
                                                   record("g.verdicts", 1, OUT, main_verdict(OUT, 1))]}))
    assert [(p.source_event_id, p.main.risk_level.value, p.canary.risk_level.value) for p in pairs] == \
        [("e0", "Safe", "Unsafe")]
    assert reader.to_commit() == {conversations: 2, verdicts: 2}  # e2 still waits for its main verdict

    reader.pairing.clock = lambda: float("inf")  # e2's main verdict never comes
    reader.give_up()
    assert reader.to_commit() == {conversations: 3, verdicts: 2}


def test_a_canary_that_cannot_open_its_pool_leaves_the_worker_enforcing(monkeypatch, caplog):
    def fails(settings):
        raise RuntimeError("a GenGuard actor failed to load '/no/such/model'")

    monkeypatch.setattr(runtime, "open_pool", fails)
    with caplog.at_level(logging.ERROR, logger="guardstream"):
        assert runtime.open_canary(SETTINGS) is None
    assert "runs WITHOUT the canary" in caplog.text and "/no/such/model" in caplog.text

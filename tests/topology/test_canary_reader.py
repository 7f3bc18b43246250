"""The canary's reader without a broker: what it sends to the canary pool, what it holds
uncommitted until its pair is published, and what a canary that cannot start leaves running."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from guardstream import runtime
from guardstream.schemas import RiskLevel
from guardstream.wire import metrics
from guardstream.topology.agents import canary
from guardstream.topology.agents.canary import CanaryModels, CanaryReader
from guardstream.topology.settings import Settings
from guardstream.wire.policy import PoliciesInForce
from guardstream.workers.moderation.canary import sampled
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.moderation.stream_state import StreamRef
from guardstream.workers.moderation.rules import GenRules
from guardstream.workers.engines.messages import GenResult
from guardstream.workers.engines.gen_output import GenJudgement

SETTINGS = Settings.load({}, canary={"gen_model": "canary-model", "sample": 0.5, "join_timeout_s": 30},
                         canary_sample_secret="s3cret")
IN, OUT = (next(f"c{i}" for i in range(100) if sampled(f"c{i}".encode(), 0.5, b"s3cret") == chosen) for chosen in (True, False))


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
        assert runtime.open_canary(SETTINGS, PoliciesInForce()) is None
    assert "runs WITHOUT the canary" in caplog.text and "/no/such/model" in caplog.text


class PoisonedPool(CountingPool):
    """A canary pool that fails on one text: an error other than an unavailable pool."""

    async def classify(self, requests):
        if any(r.messages[-1]["content"] == "poison" for r in requests):
            raise RecursionError("the canary model cannot take this input")
        return await super().classify(requests)


def reader_of(models: CanaryModels, settings: Settings = SETTINGS) -> CanaryReader:
    w = SimpleNamespace(settings=settings, conversations=topic("g.conversations"), chunks=topic("g.chunks"),
                        verdicts=topic("g.verdicts"))
    return CanaryReader(w, models)


def test_a_poison_record_in_the_sample_is_given_up_alone_and_its_batch_mates_are_paired():
    pool = PoisonedPool()
    reader = reader_of(CanaryModels(GenModerator(GenRules(), pool, "canary-model"), None))
    conversations, verdicts = TopicPartition("g.conversations", 0), TopicPartition("g.verdicts", 0)
    poison = dict(event(IN, 1), messages=[{"role": "user", "content": "poison"}])
    unpaired = metrics.CANARY_UNPAIRED.labels("gen", "canary")._value.get()
    pairs = asyncio.run(reader.handle({conversations: [record("g.conversations", 0, IN, event(IN, 0)),
                                                        record("g.conversations", 1, IN, poison),
                                                        record("g.conversations", 2, IN, event(IN, 2))]}))
    assert pairs == [] and pool.asked == 2  # the two good ones, judged alone after the batch failed
    assert metrics.CANARY_UNPAIRED.labels("gen", "canary")._value.get() == unpaired + 1
    pairs = asyncio.run(reader.handle({verdicts: [record("g.verdicts", i, IN, main_verdict(IN, i)) for i in (0, 2)]}))
    assert sorted(p.source_event_id for p in pairs) == ["e0", "e2"]
    assert reader.to_commit() == {conversations: 3, verdicts: 3}  # nothing holds the poison's offset


class SessionsOnly:
    """A canary Stream moderator that keeps a session entry per stream and judges nothing yet."""

    async def moderate(self, records, staged):
        for r in records:
            chunk = json.loads(r.value)
            ref = StreamRef(chunk["tenant"], chunk["conversation_id"], chunk["stream_id"])
            staged.put(r.partition, ref.key(), {"tenant": chunk["tenant"], "updated_at": 0.0, "prompt": "p" * 4000})
        return [], []


def test_a_flood_of_sampled_streams_keeps_at_most_max_streams_sessions():
    settings = Settings.load({}, canary={"stream_model": "canary-model", "sample": 1.0, "max_streams": 8},
                             canary_sample_secret="s")
    reader = reader_of(CanaryModels(None, SessionsOnly()), settings)
    chunks = TopicPartition("g.chunks", 0)
    for batch in range(10):  # 200 streams that never end, 20 at a time
        asyncio.run(reader.handle({chunks: [record("g.chunks", batch * 20 + i, f"c{batch}-{i}", {
            "event_id": "e", "conversation_id": f"c{batch}-{i}", "stream_id": "s", "tenant": "acme", "seq": 0,
            "prompt": "hi", "text_delta": "x"}) for i in range(20)]}))
    assert len(reader.streams) == 8 and len(reader.pairing.waiting) == 8
    assert sorted(reader.pairing._held[("g.chunks", 0)]) == list(range(8))  # only the streams it judges hold records


def test_a_canary_pool_that_never_loads_leaves_the_canary_waiting_and_says_so():
    services = []
    w = SimpleNamespace(settings=SETTINGS, conversations=topic("g.conversations"), chunks=topic("g.chunks"),
                        verdicts=topic("g.verdicts"), app=SimpleNamespace(service=lambda cls: services.append(cls) or cls))
    loading = Future()
    state = canary.register(w, loading)
    service = services[0]()
    assert not asyncio.run(service.ready()) and state.status == "canary: loading its models"
    loading.set_result(None)  # it could not be opened
    assert not asyncio.run(service.ready()) and state.status == "canary: off (its pool did not open)"
    loaded = Future()
    loaded.set_result(CanaryModels(GenModerator(GenRules(), CountingPool(), "canary-model"), None))
    state = canary.register(w, loaded)
    assert asyncio.run(services[1]().ready()) and state.status == "canary: joining its group"


def test_a_transient_failure_of_the_canary_pool_gives_nothing_up():
    class Dropped(CountingPool):
        async def classify(self, requests):
            raise ConnectionError("the canary's actor is restarting")

    reader = reader_of(CanaryModels(GenModerator(GenRules(), Dropped(), "canary-model"), None))
    conversations = TopicPartition("g.conversations", 0)
    with pytest.raises(ConnectionError):  # the reader reconnects and reads it again from the committed offset
        asyncio.run(reader.handle({conversations: [record("g.conversations", 0, IN, event(IN, 0))]}))
    assert reader.to_commit() == {conversations: 0}


async def test_partitions_assigned_while_the_consumer_is_still_starting_are_read():
    """The group may assign partitions inside `consumer.start()`, before the service holds its
    consumer: the listener seeks on the consumer it was made for, so the reader still learns
    where to start (it once failed on the service's None and read nothing)."""
    tp = TopicPartition("canary-topic", 0)

    class Starting:
        async def seek_to_committed(self, *partitions):
            return {p: 7 for p in partitions}

    reader = SimpleNamespace(lock=asyncio.Lock(), starts={}, assigned=set())
    service = SimpleNamespace(reader=reader, consumer=None, started_ms=0)
    await canary.Rebalance(service, Starting()).on_partitions_assigned({tp})
    assert reader.assigned == {tp} and reader.starts == {}  # committed at 7: aiokafka's own position holds

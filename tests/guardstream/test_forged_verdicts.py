"""Verdicts a gateway takes are the ones its own requests asked for, on the real broker with a
stand-in worker that reads each request: a verdict with the right ids but no nonce, or another
nonce (forged, or for a request that reused the ids), is skipped by `Guard` and by `serve`; two
gateways that claim reply partitions get partitions of their own and read nothing of the other's."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from guardstream.client import Guard, conversation
from guardstream.schemas import FOR_HEADER, Action, ConversationEvent, RiskLevel, VerdictEvent
from guardstream.serve import create_api
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics, topics_for

pytestmark = pytest.mark.integration


def forge_settings() -> Settings:
    return Settings.load({}, topic_prefix="forge.", topic_partitions=1, reply_partitions=4)


def answer(request: ConversationEvent, action: Action, nonce: str | None) -> VerdictEvent:
    return VerdictEvent(verdict_id=f"v-{action.value}-{nonce}", source_event_id=request.event_id,
                        conversation_id=request.conversation_id, tenant=request.tenant, moderate=request.moderate,
                        model_id="stand-in", model_variant="gen", risk_level=RiskLevel.unsafe, action=action,
                        policy="p", latency_ms=1, reply_to=request.reply_to, nonce=nonce)


class StandIn:
    """Reads each request from the conversations topic and answers as told."""

    def __init__(self, settings: Settings, bootstrap: str):
        self.settings, self.bootstrap, self.topics = settings, bootstrap, topics_for(settings.kafka)

    async def __aenter__(self) -> StandIn:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await self.consumer.start()
        await self.producer.start()
        tp = TopicPartition(self.topics.conversations.name, 0)
        self.consumer.assign([tp])
        await self.consumer.seek_to_end(tp)
        await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def request(self) -> ConversationEvent:
        record = await asyncio.wait_for(self.consumer.getone(), 30)
        return ConversationEvent.model_validate_json(record.value)

    async def send(self, verdict: VerdictEvent) -> None:
        await self.producer.send_and_wait(self.topics.replies.name, verdict.model_dump_json().encode(),
                                          key=verdict.conversation_id.encode(), partition=verdict.reply_to,
                                          headers=[(FOR_HEADER, verdict.answers())])


async def forge_then_answer(worker: StandIn) -> ConversationEvent:
    """Two forgeries with the request's ids (no nonce, a guessed one), then the true block."""
    request = await worker.request()
    assert request.nonce is not None and request.reply_to is not None
    await worker.send(answer(request, Action.allow, None))
    await worker.send(answer(request, Action.allow, "0" * 32))
    await asyncio.sleep(0.5)  # the forgeries are read first
    await worker.send(answer(request, Action.block, request.nonce))
    return request


def test_forged_verdicts_are_skipped_by_guard_and_serve_and_claimed_partitions_are_each_gateways_own(broker):
    settings = forge_settings()

    async def run():
        await ensure_topics(settings.kafka, broker.bootstrap)
        async with StandIn(settings, broker.bootstrap) as worker, \
                Guard(broker.bootstrap, settings, timeout_s=20) as a, Guard(broker.bootstrap, settings, timeout_s=20) as b:
            homes = (a.reply_partition, b.reply_partition)
            asked = asyncio.create_task(a.moderate(conversation("forge-1", "acme", "hello")))
            await forge_then_answer(worker)
            outcome = await asked

            api = create_api(b, None, timeout_s=20)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://serve") as client:
                posted = asyncio.create_task(client.post("/v1/moderations", json={"input": "hello"}))
                await forge_then_answer(worker)
                served = (await posted).json()

            # only forgeries come: the gateway's fail mode answers at its timeout, never a forged allow
            asked = asyncio.create_task(a.moderate(conversation("forge-2", "acme", "hello"), timeout=2))
            request = await worker.request()
            await worker.send(answer(request, Action.allow, None))
            silent = await asked
            return homes, outcome, served, silent, dict(a.read), dict(b.read)

    homes, outcome, served, silent, read_a, read_b = asyncio.run(run())
    assert None not in homes and homes[0] != homes[1]
    assert outcome.verdict is not None and outcome.action is Action.block and outcome.verdict.verdict_id.startswith("v-block")
    assert served["results"][0]["flagged"] and served["results"][0]["qwen3guard"]["verdict_id"].startswith("v-block")
    assert silent.verdict is None and silent.reason == "timeout"  # the fail mode, never the forged allow
    # each read its own partition only: a's 3 + 3 records (its two requests), b's 3
    assert (read_a["records"], read_a["foreign"]) == (4, 3) and (read_b["records"], read_b["foreign"]) == (3, 2)

"""No decision is lost to a broker that is away: it stays in the outbox (its row, unmarked), the
console says why it is not ready, and the next round publishes it once the broker answers."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from guardstream.console.outbox import DecisionOutbox
from guardstream.kafka_io import records
from guardstream.schemas import Action, Message, Moderate, RiskLevel, VerdictEvent
from guardstream.topology.settings import Settings
from guardstream.wire.topics import ensure_topics
from guardstream.workers.sinks.review import Queued

from tests.helpers.review_store import fresh_store

pytestmark = pytest.mark.integration


async def decided(store) -> dict:
    verdict = VerdictEvent(
        verdict_id="v1", source_event_id="e1", conversation_id="c1", tenant="acme", moderate=Moderate.prompt,
        model_id="m", model_variant="gen", risk_level=RiskLevel.controversial, categories=["PII"],
        probabilities={"Safe": 0.2, "Controversial": 0.7, "Unsafe": 0.1}, action=Action.review, policy="p",
        policy_version="acme@1", latency_ms=1.0, produced_at=datetime.now(timezone.utc),
        conversation=[Message(role="user", content="q")])
    await store.add([Queued(verdict, 1)])
    item = await store.claim(["acme"], "ann", timedelta(minutes=5))
    return await store.decide(item["item_id"], "ann", "uphold", [], "seen")


async def test_a_decision_waits_out_a_broker_that_is_away_and_is_published_once_it_answers(broker, pg_url):
    settings = Settings.load({}, topic_prefix="outbox.")
    await ensure_topics(settings.kafka, broker.bootstrap)
    store = fresh_store(pg_url)
    try:
        row = await decided(store)
        away = DecisionOutbox(store, settings, "127.0.0.1:1", timeout_s=2)  # nothing listens there
        try:
            assert await away.publish([]) is False  # readiness: the broker cannot be reached
            assert await away.publish([row]) is False
        finally:
            await away.stop()
        assert "outbox.review-decisions" in away.failing
        assert [r["decision_id"] for r in await store.unpublished()] == [row["decision_id"]]

        back = DecisionOutbox(store, settings, broker.bootstrap, every_s=0.2)
        rounds = asyncio.create_task(back.run())
        try:
            for _ in range(150):
                if not await store.unpublished():
                    break
                await asyncio.sleep(0.2)
        finally:
            rounds.cancel()
            await asyncio.gather(rounds, return_exceptions=True)
            await back.stop()
        assert await store.unpublished() == [] and back.failing is None
        published = [json.loads(m.value) async for m in records(settings, broker.bootstrap, "review_decisions",
                                                                  idle_timeout_s=2)]
        assert [(p["decision_id"], p["decision"], p["categories"], p["reviewer"]) for p in published] == \
            [(row["decision_id"], "uphold", ["PII"], "ann")]  # upheld: the model's categories
    finally:
        await store.close()

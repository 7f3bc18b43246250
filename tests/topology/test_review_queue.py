"""Review actions become review items through a running worker: one per verdict sent to review,
in the audit database beside the verdicts, with the conversation's text only for a tenant whose
policy keeps it, and none for an allowed or observed verdict."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import psycopg
import pytest

from guardstream.kafka_io import set_policy
from guardstream.schemas import derive_id
from guardstream.workers.sinks.review import ReviewStore, decision_event

from tests.helpers.kafka_helpers import produce, read_all
from tests.helpers.metrics import scrape
from tests.helpers.pipeline import wait_drained
from tests.helpers.waiting import eventually

pytestmark = pytest.mark.integration

QUESTION = "is the government right about gun control"  # the corpus: Controversial, Politically Sensitive Topics
TO_REVIEW = {"category_actions": {"Politically Sensitive Topics": "review"}}
POLICIES = {"review-text": {**TO_REVIEW, "review": {"store_text": True, "retention_days": 7}},
            "review-bare": TO_REVIEW, "review-observed": {**TO_REVIEW, "mode": "observe"}}


def items(pg_url: str) -> dict[str, dict]:
    with psycopg.connect(pg_url, row_factory=psycopg.rows.dict_row) as db:
        try:
            rows = db.execute("SELECT i.*, v.action FROM review_items i JOIN guard_verdicts v USING (verdict_id) "
                              "WHERE i.tenant LIKE 'review-%%'").fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return {row["source_event_id"]: row for row in rows}


def test_review_verdicts_become_items_with_text_only_where_the_policy_keeps_it(worker, pg_url):
    settings, bootstrap = worker.settings, worker.bootstrap
    for tenant, policy in POLICIES.items():
        asyncio.run(set_policy(settings, bootstrap, tenant, policy, "test"))
    time.sleep(5)  # a policy change reaches the workers within seconds (test_policy_reload measures it)
    events = [{"event_id": f"{tenant}-{i}", "conversation_id": f"{tenant}-{i}", "tenant": tenant,
               "messages": [{"role": "user", "content": QUESTION if i < 3 else "what time zone is cairo in"}]}
              for tenant in POLICIES for i in range(4)]
    produce(settings, bootstrap, events + events[:2])  # two sent twice: still one item each
    asyncio.run(wait_drained(settings, bootstrap, "conversations", timeout_s=120))
    verdicts = {v["source_event_id"]: v for v in read_all(settings, bootstrap, "verdicts",
                                                          lambda v: v["source_event_id"].startswith("review-"))}
    reviewed = {e for e, v in verdicts.items() if v["action"] == "review"}
    assert reviewed == {f"{tenant}-{i}" for tenant in ("review-text", "review-bare") for i in range(3)}
    assert all(verdicts[f"review-observed-{i}"]["would_action"] == "review" for i in range(3))

    eventually(lambda: set(items(pg_url)) == reviewed, 60, "an item for each review verdict")
    found = items(pg_url)
    for event_id, item in found.items():
        assert item["item_id"] == derive_id("action", verdicts[event_id]["verdict_id"]) and item["action"] == "review"
        assert (item["risk_level"], item["categories"]) == ("Controversial", ["Politically Sensitive Topics"])
        assert item["policy_version"] == verdicts[event_id]["policy_version"] and "Controversial" in item["reason"]
        if event_id.startswith("review-text-"):
            assert item["conversation"] == [{"role": "user", "content": QUESTION}]
            assert item["text_until"] - item["produced_at"] == timedelta(days=7)
        else:
            assert item["conversation"] is None and item["text_until"] is None
    bare = [v for v in verdicts.values() if v["tenant"] == "review-bare" or v["action"] != "review"]
    assert all(v.get("conversation") is None for v in bare)  # text travels only where the policy keeps it

    def depth() -> dict:
        series = scrape(settings.metrics_port, "guardstream_review_queue_items")
        return {tenant: series.get((("tenant", tenant),)) for tenant in POLICIES}

    eventually(lambda: depth() == {"review-text": 3, "review-bare": 3, "review-observed": None}, 30, "the queue's gauges")
    assert scrape(settings.metrics_port, "guardstream_review_oldest_seconds")[(("tenant", "review-text"),)] > 0


def test_a_decision_is_followed_by_the_action_after_review(worker, pg_url):
    """Upheld, a Controversial item is blocked after review; overturned, allowed; each action names
    its decision and the verdict it follows."""
    settings, bootstrap = worker.settings, worker.bootstrap
    asyncio.run(set_policy(settings, bootstrap, "review-decided", TO_REVIEW, "test"))
    time.sleep(5)
    produce(settings, bootstrap, [{"event_id": f"review-decided-{i}", "conversation_id": f"review-decided-{i}",
                                   "tenant": "review-decided", "messages": [{"role": "user", "content": QUESTION}]}
                                  for i in range(2)])
    eventually(lambda: len([e for e in items(pg_url) if e.startswith("review-decided-")]) == 2, 120, "two items")

    async def decide() -> list[dict]:
        store, decisions = ReviewStore(pg_url), []
        try:
            for decision in ("uphold", "overturn"):
                item = await store.claim(["review-decided"], "ann", timedelta(minutes=5))
                decided = await store.decide(item["item_id"], "ann", decision, [], "checked")
                decisions.append(decision_event(decided).model_dump(mode="json"))
        finally:
            await store.close()
        return decisions

    decisions = asyncio.run(decide())
    produce(settings, bootstrap, decisions, role="review_decisions")
    after = eventually(lambda: (a := {x["decision_id"]: x for x in read_all(
        settings, bootstrap, "actions", lambda x: x.get("decision_id") is not None)}) and len(a) >= 2 and a, 60,
        "an action after each decision")
    for decision in decisions:
        action = after[decision["decision_id"]]
        assert action["action"] == {"uphold": "block", "overturn": "allow"}[decision["decision"]]
        assert (action["verdict_id"], action["source_event_id"]) == (decision["verdict_id"], decision["source_event_id"])
        assert f"after review by ann: {decision['decision']} of Controversial" in action["reason"]


def test_a_decision_no_reviewer_made_is_dead_lettered_not_followed(worker, pg_url):
    """Whoever gets to write the decisions topic cannot have a conversation allowed after review:
    a decision the queue does not hold, or one changed from what it holds, is refused."""
    settings, bootstrap = worker.settings, worker.bootstrap
    asyncio.run(set_policy(settings, bootstrap, "review-forged", TO_REVIEW, "test"))
    time.sleep(5)
    produce(settings, bootstrap, [{"event_id": "review-forged-0", "conversation_id": "review-forged-0",
                                   "tenant": "review-forged", "messages": [{"role": "user", "content": QUESTION}]}])
    eventually(lambda: "review-forged-0" in items(pg_url), 120, "the item")

    async def decide() -> dict:
        store = ReviewStore(pg_url)
        try:
            item = await store.claim(["review-forged"], "ann", timedelta(minutes=5))
            return decision_event(await store.decide(item["item_id"], "ann", "uphold", [], None)).model_dump(mode="json")
        finally:
            await store.close()

    genuine = asyncio.run(decide())
    made_up = {**genuine, "decision_id": "made-up-decision", "decision": "overturn", "reviewer": "mallory"}
    changed = {**genuine, "decision": "overturn"}  # the genuine id, the other outcome
    produce(settings, bootstrap, [made_up, changed, genuine], role="review_decisions")
    eventually(lambda: read_all(settings, bootstrap, "actions", lambda a: a.get("decision_id") == genuine["decision_id"]),
               60, "the genuine one followed")
    letters = eventually(lambda: (d := read_all(settings, bootstrap, "dlq", lambda d: d["topic"].endswith("review-decisions")
                                                and d["error_code"] == "unverified_decision")) and len(d) >= 2 and d,
                         60, "two decisions refused")
    time.sleep(3)  # nothing else comes of them
    followed = [a for a in read_all(settings, bootstrap, "actions", lambda a: a.get("verdict_id") == genuine["verdict_id"]
                                    and a.get("decision_id") is not None)]
    assert [(a["decision_id"], a["action"]) for a in followed] == [(genuine["decision_id"], "block")]
    reasons = sorted(d["error"] for d in letters)
    assert any("no such decision in the review queue" in r for r in reasons)
    assert any("differs from the decision the review queue holds" in r for r in reasons)

"""The review queue's store on PostgreSQL: idempotent items, leases that never double-book and
that expire, decisions only under a held lease, and text purged after its retention."""

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from click.testing import CliRunner

from guardstream.cli import main
from guardstream.evaluation.dataset import load
from guardstream.schemas import Action, Message, Moderate, RiskLevel, VerdictEvent, derive_id
from guardstream.workers.sinks.audit import AuditRejected
from guardstream.workers.sinks.review import LeaseLost, Queued, ReviewStore, decision_event

from tests.helpers.review_store import fresh_store

pytestmark = pytest.mark.integration
LEASE = timedelta(minutes=5)


def verdict(i: int, tenant: str = "acme", risk: RiskLevel = RiskLevel.controversial, age_s: float = 0, **overrides):
    return VerdictEvent(
        verdict_id=f"v{i}", source_event_id=f"e{i}", conversation_id=f"c{i}", tenant=tenant, moderate=Moderate.prompt,
        model_id="m", model_variant="gen", risk_level=risk,
        probabilities={"Safe": 0.2, "Controversial": 0.7, "Unsafe": 0.1}, action=Action.review, policy="p",
        policy_version="acme@1", latency_ms=1.0, produced_at=datetime.now(timezone.utc) - timedelta(seconds=age_s),
        **{"conversation": [Message(role="user", content=f"question {i}")],
           "categories": ["Politically Sensitive Topics"], **overrides})


@pytest.fixture
async def store(pg_url):
    s = fresh_store(pg_url)
    yield s
    await s.close()


async def test_a_redelivered_verdict_adds_no_second_item(store):
    await store.add([Queued(verdict(1), 30), Queued(verdict(2), 30)])
    await store.add([Queued(verdict(1), 30)])
    queue = await store.queue(["acme"])
    assert [row["item_id"] for row in queue] == [derive_id("action", "v1"), derive_id("action", "v2")]
    assert queue[0]["conversation"] == [{"role": "user", "content": "question 1"}]


async def test_the_text_is_kept_only_when_told_and_purged_after_its_retention(store):
    await store.add([Queued(verdict(1), 30), Queued(verdict(2), None), Queued(verdict(3, age_s=3 * 86400), 2)])
    rows = {row["verdict_id"]: row for row in await store.queue(["acme"])}
    assert rows["v2"]["conversation"] is None and rows["v2"]["text_until"] is None
    assert rows["v1"]["text_until"] - rows["v1"]["produced_at"] == timedelta(days=30)
    assert await store.purge_text() == 1  # v3's two days are over
    rows = {row["verdict_id"]: row for row in await store.queue(["acme"])}
    assert rows["v3"]["conversation"] is None and rows["v1"]["conversation"] is not None
    assert await store.purge_text(datetime.now(timezone.utc) + timedelta(days=31)) == 1 and await store.purge_text() == 0


async def test_the_queue_is_most_severe_then_oldest_and_of_the_reviewers_tenants_only(store):
    await store.add([Queued(verdict(1, age_s=60), None), Queued(verdict(2, risk=RiskLevel.unsafe), None),
                     Queued(verdict(3, age_s=120), None), Queued(verdict(4, tenant="globex", risk=RiskLevel.unsafe), None)])
    assert [row["verdict_id"] for row in await store.queue(["acme"])] == ["v2", "v3", "v1"]
    assert [row["verdict_id"] for row in await store.queue(["acme"], risk="Controversial")] == ["v3", "v1"]
    assert await store.claim(["acme"], "ann", LEASE, item_id=derive_id("action", "v4")) is None  # globex's
    assert await store.item(derive_id("action", "v4"), ["acme"]) is None


async def test_concurrent_claims_never_hold_the_same_item(store):
    await store.add([Queued(verdict(i), None) for i in range(20)])
    reviewers = [ReviewStore(store.url) for _ in range(8)]
    try:
        async def work(s: ReviewStore, name: str) -> list[str]:
            """Claim the next item and decide it, until none is left (one held at a time, as in the console)."""
            decided = []
            while (item := await s.claim(["acme"], name, LEASE)) is not None:
                decided.append((await s.decide(item["item_id"], name, "uphold", [], None))["item_id"])
            return decided

        done = await asyncio.gather(*(work(s, f"r{n}") for n, s in enumerate(reviewers)))
    finally:
        await asyncio.gather(*(s.close() for s in reviewers))
    decided = [item for items in done for item in items]
    assert len(decided) == len(set(decided)) == 20 and sum(1 for items in done if items) > 1
    assert await store.claim(["acme"], "r0", LEASE) is None


async def test_claiming_while_holding_an_item_gives_that_item_back_with_a_longer_lease(store):
    await store.add([Queued(verdict(1, risk=RiskLevel.unsafe), None), Queued(verdict(2), None)])
    first = await store.claim(["acme"], "ann", timedelta(seconds=30), item_id=derive_id("action", "v2"))
    again = await store.claim(["acme"], "ann", LEASE)
    assert again["item_id"] == first["item_id"] and again["lease_until"] > first["lease_until"]


async def test_an_expired_lease_returns_the_item_and_its_old_holder_cannot_decide(store):
    await store.add([Queued(verdict(1), None)])
    item = await store.claim(["acme"], "ann", timedelta(seconds=0.5))
    assert await store.claim(["acme"], "bob", LEASE) is None  # held by ann
    await asyncio.sleep(0.7)
    assert (await store.claim(["acme"], "bob", LEASE))["item_id"] == item["item_id"]
    with pytest.raises(LeaseLost, match="claim it again"):
        await store.decide(item["item_id"], "ann", "uphold", [], None)
    decided = await store.decide(item["item_id"], "bob", "overturn", [], "not political")
    assert (decided["reviewer"], decided["decision"], decided["note"]) == ("bob", "overturn", "not political")
    assert await store.queue(["acme"]) == [] and await store.claim(["acme"], "ann", LEASE) is None
    with pytest.raises(LeaseLost):  # decided once
        await store.decide(item["item_id"], "bob", "uphold", [], None)
    shown = await store.item(item["item_id"], ["acme"])
    assert (shown["decision"], shown["reviewer"]) == ("overturn", "bob")


async def test_a_released_item_is_claimable_at_once(store):
    await store.add([Queued(verdict(1), None)])
    item = await store.claim(["acme"], "ann", LEASE)
    await store.release(item["item_id"], "bob")  # not bob's to release
    assert await store.claim(["acme"], "bob", LEASE) is None
    await store.release(item["item_id"], "ann")
    assert (await store.claim(["acme"], "bob", LEASE))["item_id"] == item["item_id"]


async def test_a_nul_in_the_text_is_kept_as_a_replacement_and_a_row_the_database_refuses_is_rejected(store):
    await store.add([Queued(verdict(1, conversation=[Message(role="user", content="a\x00b\\u0000")]), 30)])
    assert (await store.queue(["acme"]))[0]["conversation"] == [{"role": "user", "content": "a\ufffdb\\u0000"}]
    with pytest.raises(AuditRejected, match="refused the review item"):
        await store.add([Queued(verdict(2, categories=["a\x00b"]), 30)])  # in the reason: text refuses a NUL


async def test_decisions_export_as_a_labelled_set_that_eval_reads(store, tmp_path):
    """Upheld: the model's tier; overturned: the other side, with the reviewer's categories; no
    text or an Error verdict: not exported, and counted."""
    await store.add([Queued(verdict(1), 30), Queued(verdict(2, risk=RiskLevel.unsafe, categories=["Violent"]), 30),
                     Queued(verdict(3, risk=RiskLevel.safe, categories=[], language="es"), 30),
                     Queued(verdict(4), None), Queued(verdict(5, risk=RiskLevel.error, categories=[]), 30),
                     Queued(verdict(6, tenant="globex"), 30)])
    decisions = {"v1": ("uphold", []), "v2": ("overturn", []), "v3": ("overturn", ["PII"]), "v4": ("uphold", []),
                 "v5": ("overturn", []), "v6": ("uphold", [])}
    for verdict_id, (decision, categories) in decisions.items():
        tenant = "globex" if verdict_id == "v6" else "acme"
        item = await store.claim([tenant], "ann", LEASE, item_id=derive_id("action", verdict_id))
        await store.decide(item["item_id"], "ann", decision, categories, None)

    out = await asyncio.to_thread(CliRunner().invoke, main, ["review", "export", str(tmp_path / "reviewed.jsonl"),
                                                             "--tenant", "acme", "--audit-url", store.url])
    assert out.exit_code == 0, out.output
    said = " ".join(out.output.split())  # as the terminal wraps it
    assert "wrote 3 labelled items" in said and "from 5 decisions; 1 without text" in said and "1 on Error" in said
    items = {i.id: i for i in load(tmp_path / "reviewed.jsonl")}
    as_labelled = {verdict_id: (items[derive_id("action", verdict_id)].label, items[derive_id("action", verdict_id)].categories)
                   for verdict_id in ("v1", "v2", "v3")}
    assert as_labelled == {"v1": ("Controversial", ["Politically Sensitive Topics"]), "v2": ("Safe", []), "v3": ("Unsafe", ["PII"])}
    assert items[derive_id("action", "v3")].language == "es" and len(items) == 3
    assert items[derive_id("action", "v1")].messages[0].content == "question 1"


def test_export_needs_the_postgresql_queue(tmp_path):
    out = CliRunner().invoke(main, ["review", "export", str(tmp_path / "x.jsonl"), "--audit-url", "sqlite:///a.db"])
    assert out.exit_code != 0 and "the review queue is in PostgreSQL" in out.output


async def test_a_decision_event_names_the_reviewers_categories_else_the_models_where_it_is_unsafe(store):
    await store.add([Queued(verdict(i), None) for i in (1, 2, 3)])
    made = {}
    for verdict_id, decision, categories in (("v1", "uphold", []), ("v2", "overturn", []), ("v3", "uphold", ["PII"])):
        item = await store.claim(["acme"], "ann", LEASE, item_id=derive_id("action", verdict_id))
        made[verdict_id] = decision_event(await store.decide(item["item_id"], "ann", decision, categories, "n"))
    assert {k: (e.unsafe(), e.categories) for k, e in made.items()} == {
        "v1": (True, ["Politically Sensitive Topics"]), "v2": (False, []), "v3": (True, ["PII"])}
    assert made["v1"].item_id == derive_id("action", "v1") and made["v1"].reviewer == "ann" and made["v1"].note == "n"


async def test_decisions_wait_for_publishing_until_marked_published(store):
    """The console's outbox: a decision stored is unpublished until its event is on the topic."""
    await store.add([Queued(verdict(i), None) for i in (1, 2)])
    for verdict_id in ("v1", "v2"):
        item = await store.claim(["acme"], "ann", LEASE, item_id=derive_id("action", verdict_id))
        await store.decide(item["item_id"], "ann", "uphold", [], None)
    waiting = await store.unpublished()
    assert [row["verdict_id"] for row in waiting] == ["v1", "v2"]
    await store.mark_published([waiting[0]["decision_id"]])
    assert [decision_event(row).verdict_id for row in await store.unpublished()] == ["v2"]
    await store.mark_published([waiting[1]["decision_id"]])
    assert await store.unpublished() == []


async def test_decision_rates_count_the_last_hour_per_tenant_and_overturns_per_category(store):
    await store.add([Queued(verdict(1), None), Queued(verdict(2), None), Queued(verdict(3, risk=RiskLevel.safe, categories=[]), None),
                     Queued(verdict(4, tenant="globex", risk=RiskLevel.unsafe, categories=["Violent", "PII"]), None)])
    for verdict_id, decision in (("v1", "uphold"), ("v2", "overturn"), ("v3", "overturn"), ("v4", "overturn")):
        tenant = "globex" if verdict_id == "v4" else "acme"
        item = await store.claim([tenant], "ann", LEASE, item_id=derive_id("action", verdict_id))
        await store.decide(item["item_id"], "ann", decision, [], None)
    async with await psycopg.AsyncConnection.connect(store.url, autocommit=True) as db:  # one decided two hours ago
        await db.execute("UPDATE review_decisions SET decided_at = now() - interval '2 hours' WHERE verdict_id = 'v1'")
    hourly, by_category = await store.decision_rates()
    assert {r["tenant"]: r["decided"] for r in hourly} == {"acme": 2, "globex": 1}
    assert {r["category"]: (r["decided"], r["overturned"]) for r in by_category} == {
        "Politically Sensitive Topics": (2, 1), "None": (1, 1), "Violent": (1, 1), "PII": (1, 1)}

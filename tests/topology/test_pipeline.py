"""Conversation events → Faust → Ray GenGuard → verdicts, actions, audit rows and analytics."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter

import psycopg
import pytest

from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.kafka_io import policy_history
from guardstream.schemas import Action, Moderate, RiskLevel, VerdictEvent

from tests.helpers.pipeline import POLICY, wait_drained
from tests.helpers.kafka_helpers import produce, read_all

pytestmark = pytest.mark.integration

N = 240
TENANTS = ["acme", "globex", "initech"]
PREFIX = "pipe"


def corpus_events() -> tuple[list[dict], dict[str, str]]:
    """N corpus examples spread over the tenants, and a twin of each Controversial one for every
    other tenant, so that strict and loose policies meet the same content."""
    corpus = load_corpus()
    events, heldout_labels = [], {}
    for i in range(N):
        example = corpus[i % len(corpus)]
        event_id, tenant = f"{PREFIX}-{i:04d}", TENANTS[i % 3]
        twins = [t for t in TENANTS if t != tenant] if example.label == "Controversial" else []
        for suffix, owner in [("", tenant)] + [(f"-{t}", t) for t in twins]:
            events.append({"event_id": event_id + suffix, "conversation_id": f"{PREFIX}-conv-{i // 3}{suffix}",
                           "tenant": owner, "moderate": example.kind, "messages": example.messages})
        if example.split == "heldout":
            heldout_labels[event_id] = example.label
    return events, heldout_labels


def mine(value: dict) -> bool:
    return value.get("source_event_id", "").startswith(f"{PREFIX}-")


@pytest.fixture(scope="module")
def moderated(worker):
    events, heldout = corpus_events()
    produce(worker.settings, worker.bootstrap, events)
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "conversations"))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts"))
    verdicts = read_all(worker.settings, worker.bootstrap, "verdicts", mine)
    return events, heldout, verdicts


def test_every_event_yields_exactly_one_verdict(moderated):
    events, _, verdicts = moderated
    assert len(verdicts) == len(events)
    assert sorted(v["source_event_id"] for v in verdicts) == sorted(e["event_id"] for e in events)
    assert len({v["verdict_id"] for v in verdicts}) == len(events)
    errors = [v for v in verdicts if v["risk_level"] == RiskLevel.error.value]
    assert len(errors) <= len(events) * 0.02  # the tiny model rarely misformats; such a reply is an Error verdict
    assert all(v["error"].startswith("malformed model output") and v["action"] in ("block", "allow") for v in errors)


def test_the_tiny_model_agrees_with_heldout_labels(moderated):
    _, heldout, verdicts = moderated
    judged = {v["source_event_id"]: v["risk_level"] for v in verdicts if v["source_event_id"] in heldout}
    agree = sum(judged[e] == label for e, label in heldout.items())
    assert len(judged) == len(heldout) >= 40
    assert agree / len(heldout) >= 0.9, f"{agree}/{len(heldout)}"


def test_actions_follow_each_tenants_policy(worker, moderated):
    _, _, verdicts = moderated
    actions = {a["verdict_id"]: a for a in read_all(worker.settings, worker.bootstrap, "actions", mine)}
    assert set(actions) == {v["verdict_id"] for v in verdicts}
    controversial = Counter()
    for v in verdicts:
        policy = POLICY["tenants"].get(v["tenant"], POLICY["default"])
        expected = v["action"]
        if v["risk_level"] == "Controversial":
            expected = "block" if policy["mode"] == "strict" else "allow"
            controversial[(v["tenant"], actions[v["verdict_id"]]["action"])] += 1
        elif v["risk_level"] == "Unsafe":
            expected = "review" if "PII" in v["categories"] and v["tenant"] == "globex" else "block"
        elif v["risk_level"] == "Safe":
            expected = "allow"
        assert (v["action"], actions[v["verdict_id"]]["action"]) == (expected, expected), v
    assert controversial[("acme", "block")] and controversial[("globex", "allow")]  # strict vs loose on the same content


def test_audit_rows_equal_verdicts_and_redelivery_adds_none(worker, pg_url, moderated):
    events, _, verdicts = moderated

    def audit_rows() -> dict[str, tuple]:
        with psycopg.connect(pg_url) as db:
            rows = db.execute("SELECT verdict_id, source_event_id, risk_level, action, excerpt FROM guard_verdicts "
                              "WHERE source_event_id LIKE %s", (f"{PREFIX}-%",)).fetchall()
        return {r[0]: r[1:] for r in rows}

    expected = {v["verdict_id"]: (v["source_event_id"], v["risk_level"], v["action"], None) for v in verdicts}
    assert audit_rows() == expected  # raw text is not stored unless configured

    produce(worker.settings, worker.bootstrap, events)  # the same events again, as after a crash before commit
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "conversations"))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts"))
    again = read_all(worker.settings, worker.bootstrap, "verdicts", mine)
    assert len(again) == 2 * len(events) and {v["verdict_id"] for v in again} == set(expected)
    assert audit_rows() == expected


def expected_counts(verdicts: list[dict]) -> Counter:
    expected = Counter()
    for v in {v["verdict_id"]: v for v in verdicts}.values():
        for category in v["categories"] or ["None"]:
            expected[(v["tenant"], v["risk_level"], category)] += 1
    return expected


def test_analytics_counts_equal_verdict_counts(worker, moderated):
    _, _, verdicts = moderated
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts"))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "analytics_by_key"))
    expected = expected_counts(verdicts)
    latest = {}
    for update in read_all(worker.settings, worker.bootstrap, "analytics", lambda u: u["tenant"] in TENANTS):
        latest[(update["window_start"], update["tenant"], update["risk_level"], update["category"])] = update["count"]
    counted = Counter()
    for (_, tenant, risk, category), count in latest.items():
        counted[(tenant, risk, category)] += count
    assert counted == expected


def test_prometheus_counts_each_verdict_once(worker, moderated):
    _, _, verdicts = moderated
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts"))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "analytics_by_key"))
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.metrics_port}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    scraped = Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "guardstream_verdicts_total" and sample.labels["tenant"] in TENANTS:
                scraped[(sample.labels["tenant"], sample.labels["risk_level"], sample.labels["category"])] = int(sample.value)
    assert scraped == expected_counts(verdicts)


def test_made_up_tenant_names_add_no_metric_series(worker, moderated):
    """2,000 verdicts of tenants the policy does not name (anyone may write them): the tenant labels
    stay the policy's tenants (in the document or on the policies topic) and `other`."""
    made_up = [VerdictEvent(verdict_id=f"made-up-{i}", source_event_id=f"e{i}", conversation_id=f"c{i}",
                            tenant=f"made-up-{i:04d}", moderate=Moderate.prompt, model_id="m", model_variant="gen",
                            risk_level=RiskLevel.unsafe, categories=["Violent"], action=Action.block, policy="p",
                            latency_ms=1).model_dump(mode="json") for i in range(2000)]
    produce(worker.settings, worker.bootstrap, made_up, role="verdicts")
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts"))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "analytics_by_key"))
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.settings.metrics_port}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    labelled = {(family.name, sample.labels["tenant"]) for family in text_string_to_metric_families(exposition)
                for sample in family.samples if "tenant" in sample.labels}
    set_on_topic, _ = asyncio.run(policy_history(worker.settings, worker.bootstrap))  # test_policy_reload's
    allowed = {*POLICY["tenants"], *set_on_topic.set_versions(), "default", "other"}
    assert {tenant for _, tenant in labelled} <= allowed
    assert {("guardstream_actions", "other"), ("guardstream_verdicts", "other")} <= labelled


def test_health_probes_and_lag_gauges_answer_on_the_metrics_port(worker, moderated):
    base = f"http://127.0.0.1:{worker.settings.metrics_port}"
    for probe in ("healthz", "readyz"):
        with urllib.request.urlopen(f"{base}/{probe}", timeout=10) as response:
            assert response.status == 200, probe
            assert json.loads(response.read())["ok"] is True
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    families = {f.name for f in text_string_to_metric_families(exposition)}
    lagging = {s.labels["topic"] for f in text_string_to_metric_families(exposition) for s in f.samples
               if f.name == "guardstream_consumer_lag"}
    # lag is the agents' source topics' (a table's changelog is read whole on recovery, never "behind";
    # Faust's assignor topic is its own)
    assert lagging and not [t for t in lagging if t.endswith("-changelog") or "__assignor" in t], lagging
    assert {"guardstream_consumer_lag", "guardstream_table_entries", "guardstream_retries",
            "guardstream_batch_failures", "guardstream_dead_letters"} <= families


def test_every_topic_and_group_of_the_app_is_under_its_prefix(worker, moderated):
    """Faust's own topics too (table changelogs, the assignor's leader topic), so that a prefix ACL
    (`guard.` for topics and groups) is all a secured Kafka needs to grant."""
    settings = worker.settings

    async def names() -> tuple[list[str], list[str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap, **settings.kafka.client_options())
        await admin.start()
        try:
            return list(await admin.list_topics()), [g[0] for g in await admin.list_consumer_groups()]
        finally:
            await admin.close()

    topics, groups = asyncio.run(names())
    ours = [t for t in topics if settings.kafka.app_id in t]
    assert any(t.endswith("-changelog") for t in ours) and any("__assignor" in t for t in ours), ours
    assert [t for t in ours if not t.startswith(settings.kafka.topic_prefix)] == []
    assert settings.kafka.group_id in groups and settings.kafka.group_id.startswith(settings.kafka.topic_prefix)
    assert [g for g in groups if settings.kafka.app_id in g and not g.startswith(settings.kafka.topic_prefix)] == []


def test_an_event_id_reused_for_other_content_gets_its_own_verdict_action_and_audit_row(worker, pg_url, moderated):
    corpus = [e for e in load_corpus() if e.kind == "prompt" and e.split != "heldout"]
    harmless, unsafe = next(e for e in corpus if e.label == "Safe"), next(e for e in corpus if e.label == "Unsafe")
    events = [{"event_id": "reused-1", "conversation_id": "reused-conv", "tenant": "acme", "moderate": "prompt",
               "messages": example.messages} for example in (harmless, unsafe)]
    produce(worker.settings, worker.bootstrap, events)
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "conversations"))
    asyncio.run(wait_drained(worker.settings, worker.bootstrap, "verdicts"))

    def reused(value: dict) -> bool:
        return value.get("source_event_id") == "reused-1"

    verdicts = read_all(worker.settings, worker.bootstrap, "verdicts", reused)
    assert len({v["verdict_id"] for v in verdicts}) == 2, "the unsafe judgement hid behind the harmless one's id"
    assert sorted(v["risk_level"] for v in verdicts) == ["Safe", "Unsafe"]
    actions = read_all(worker.settings, worker.bootstrap, "actions", reused)
    assert {a["verdict_id"] for a in actions} == {v["verdict_id"] for v in verdicts}
    assert sorted(a["action"] for a in actions) == ["allow", "block"]
    with psycopg.connect(pg_url) as db:
        rows = db.execute("SELECT verdict_id, risk_level FROM guard_verdicts WHERE source_event_id = 'reused-1'").fetchall()
    assert sorted(rows) == sorted((v["verdict_id"], v["risk_level"]) for v in verdicts)

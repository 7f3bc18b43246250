from datetime import datetime, timezone

import pytest

from guardstream.schemas import Action, Moderate, ReviewDecision, RiskLevel, VerdictEvent
from guardstream.workers.sinks.analytics import CountKey, StreamTime, count_keys
from guardstream.workers.sinks.enforcement import action_for, follow_up


def verdict(**overrides) -> VerdictEvent:
    fields = dict(verdict_id="v1", source_event_id="e1", conversation_id="c1", tenant="acme", moderate=Moderate.prompt,
                  model_id="m", model_variant="gen", risk_level=RiskLevel.unsafe, categories=["Violent", "PII"],
                  action=Action.block, policy="tenant=acme mode=strict fail=closed", latency_ms=3,
                  produced_at=datetime(2026, 1, 1, 12, 0, 59, tzinfo=timezone.utc))
    return VerdictEvent(**{**fields, **overrides})


def test_one_count_key_per_category_in_the_verdicts_window():
    keys = count_keys(verdict(), 60)
    start = int(datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc).timestamp())
    assert [k.encode() for k in keys] == [f"{start}|acme|Unsafe|Violent", f"{start}|acme|Unsafe|PII"]
    assert [k.encode() for k in count_keys(verdict(categories=[], risk_level=RiskLevel.safe), 60)] == [f"{start}|acme|Safe|None"]
    assert keys[0].window == start


def test_keys_read_back_what_they_wrote():
    key = count_keys(verdict(categories=["Suicide & Self-Harm"]), 60)[0]
    assert CountKey.decode(key.encode()) == key and isinstance(CountKey.decode(key.encode()).window, int)
    assert key.entry("v|1") == f"{key.encode()}|v|1" and CountKey.of_entry(key.entry("v|1")) == key


def test_window_count_reads_back_its_key():
    key = count_keys(verdict(), 300)[1]
    update = key.count(7, 300)
    assert (update.tenant, update.risk_level, update.category, update.count) == ("acme", RiskLevel.unsafe, "PII", 7)
    assert (update.window_end - update.window_start).total_seconds() == 300


def test_every_verdict_becomes_one_action_with_a_deterministic_id_and_a_reason():
    a, b = action_for(verdict()), action_for(verdict())
    assert a.action_id == b.action_id and a.action is Action.block and a.verdict_id == "v1"
    assert a.reason == "Unsafe (Violent, PII) under tenant=acme mode=strict fail=closed"
    err = action_for(verdict(risk_level=RiskLevel.error, categories=[], error="pool down", action=Action.allow))
    assert err.action is Action.allow and "model error: pool down" in err.reason


def test_stream_time_expires_windows_by_the_data_per_partition_not_by_the_clock():
    clock = StreamTime(window_s=60, retention_s=120)
    clock.advance(0, 1000)
    assert not clock.expired(0, 1000) and not clock.expired(0, 900)  # a backlog is not late
    clock.advance(0, 1200)  # stream time 1260: windows ending before 1140 are gone
    assert clock.expired(0, 1000) and not clock.expired(0, 1080)
    assert not clock.expired(1, 0), "another partition keeps its own time"
    clock.advance(0, 100)  # data out of order does not move stream time back
    assert clock.latest[0] == 1260


@pytest.mark.parametrize("risk, decision, after", [
    ("Unsafe", "uphold", "block"), ("Unsafe", "overturn", "allow"), ("Controversial", "uphold", "block"),
    ("Safe", "uphold", "allow"), ("Safe", "overturn", "block"), ("Error", "uphold", "block")])
def test_the_action_after_review_blocks_what_the_reviewer_found_unsafe(risk, decision, after):
    made = ReviewDecision(decision_id="d1", item_id="i1", verdict_id="v1", source_event_id="e1", conversation_id="c1",
                          tenant="acme", reviewer="ann", decision=decision, risk_level=risk, categories=["PII"])
    action = follow_up(made)
    assert (action.action.value, action.decision_id, action.verdict_id) == (after, "d1", "v1")
    assert action.action_id != follow_up(made.model_copy(update={"decision_id": "d2"})).action_id
    assert action.reason.startswith(f"after review by ann: {decision} of {risk} (PII)")

"""The canary's sample, its pairing of main and canary verdicts, and the report's arithmetic."""

from __future__ import annotations

from guardstream.schemas import Action, Moderate, RiskLevel, StreamPosition, VerdictEvent
from guardstream.workers.moderation.canary import CanaryReport, Pairing, pair_record, sampled


def verdict(model: str = "main", event: str = "e1", risk: RiskLevel = RiskLevel.safe, categories=(), stream=None,
            **overrides) -> VerdictEvent:
    fields = dict(verdict_id=f"{model}-{event}", source_event_id=event, conversation_id="c1", tenant="acme",
                  moderate=Moderate.prompt, model_id=model, model_variant="stream" if stream else "gen", risk_level=risk,
                  categories=list(categories), action=Action.block if risk is RiskLevel.unsafe else Action.allow,
                  policy="tenant=acme", policy_version="acme@2", latency_ms=1.0, stream=stream)
    return VerdictEvent(**{**fields, **overrides})


def final(stop: int | None = None, would: int | None = None) -> StreamPosition:
    return StreamPosition(stream_id="s1", seq=None, token_offset=0, token_count=40, stop_token=stop,
                          would_stop_token=would, final=True)


def test_the_sample_is_a_deterministic_share_of_conversation_ids_that_only_the_secret_names():
    ids = [f"conversation-{i}".encode() for i in range(20_000)]
    chosen = [i for i in ids if sampled(i, 0.05, b"secret")]
    assert 0.04 < len(chosen) / len(ids) < 0.06
    assert chosen == [i for i in ids if sampled(i, 0.05, b"secret")]  # the same ones every time
    assert set(chosen) <= {i for i in ids if sampled(i, 0.2, b"secret")}  # a larger share keeps the smaller one's
    assert all(sampled(i, 1.0, b"secret") for i in ids) and not sampled(None, 1.0, b"secret")
    # another secret, another sample: ids picked to be (or not be) sampled under one key are a coin toss under another
    other = [i for i in ids if sampled(i, 0.05, b"another")]
    assert len(set(chosen) & set(other)) < 0.2 * len(chosen)


def test_a_pair_forms_whichever_side_comes_first_and_releases_its_records():
    pairing = Pairing(timeout_s=60, max_waiting=100, clock=lambda: 0.0)
    main, canary = verdict("main", "e1", RiskLevel.unsafe, ["Violent"]), verdict("canary", "e1", RiskLevel.safe)
    pairing.hold(main.answers(), "conversations-0", 7)
    pairing.hold(main.answers(), "verdicts-0", 3)
    assert pairing.offer("canary", canary) is None
    assert pairing.commit_points({"conversations-0": 9, "verdicts-0": 5}) == {"conversations-0": 7, "verdicts-0": 3}
    record = pairing.offer("main", main)
    assert record is not None and not pairing.waiting
    assert (record.main.risk_level, record.canary.risk_level) == (RiskLevel.unsafe, RiskLevel.safe)
    assert (record.main.model_id, record.canary.model_id, record.policy_version) == ("main", "canary", "acme@2")
    assert record.canary_id == pair_record(main, canary).canary_id  # the same id on a replay
    assert pairing.commit_points({"conversations-0": 9, "verdicts-0": 5}) == {"conversations-0": 9, "verdicts-0": 5}


def test_a_side_alone_past_the_timeout_is_given_up_and_stops_holding_its_partition():
    now = [0.0]
    pairing = Pairing(timeout_s=10, max_waiting=100, clock=lambda: now[0])
    late = verdict("main", "e-late")
    pairing.hold(late.answers(), "p", 1)
    pairing.offer("main", late)
    now[0] = 5.0
    fresh = verdict("main", "e-fresh")
    pairing.hold(fresh.answers(), "p", 2)
    pairing.offer("main", fresh)
    now[0] = 11.0
    gone = pairing.give_up()
    assert [(key, g.main.source_event_id, g.missing) for key, g in gone] == [(late.answers(), "e-late", "canary")]
    assert pairing.commit_points({"p": 3}) == {"p": 2}


def test_past_max_waiting_the_oldest_are_given_up_first():
    pairing = Pairing(timeout_s=1000, max_waiting=2, clock=lambda: 0.0)
    for i in range(4):
        pairing.offer("canary", verdict("canary", f"e{i}"))
    assert [g.canary.source_event_id for _, g in pairing.give_up()] == ["e0", "e1"]
    assert len(pairing.waiting) == 2


def test_past_max_bytes_the_oldest_are_given_up_and_the_bytes_come_back():
    pairing = Pairing(timeout_s=1000, max_waiting=10_000, clock=lambda: 0.0, max_bytes=100_000)
    for i in range(40):  # each verdict carries 8,000 characters of excerpt: about 34 kB waiting
        pairing.offer("canary", verdict("canary", f"e{i}").model_copy(update={"excerpt": "x" * 8000}))
    gone = pairing.give_up()
    assert gone and gone[0][1].canary.source_event_id == "e0" and pairing.bytes <= 100_000
    assert len(pairing.waiting) == 40 - len(gone) <= 3
    pairing.give_up()
    for key in list(pairing.waiting):
        pairing.drop(key)
    assert pairing.bytes == 0 and pairing.waiting == {}


def test_observe_mode_and_streams_compare_what_enforcement_would_do():
    observed = verdict("main", "e1", RiskLevel.unsafe, observed=True, would_action=Action.block, action=Action.allow)
    assert pair_record(observed, verdict("canary", "e1")).main.action is Action.block
    stream = verdict("main", "e1", RiskLevel.unsafe, stream=final(would=12))
    record = pair_record(stream, verdict("canary", "e1", RiskLevel.unsafe, stream=final(stop=9)))
    assert (record.variant, record.stream_id, record.main.stop_token, record.canary.stop_token) == ("stream", "s1", 12, 9)


def test_the_report_counts_each_pair_once_and_computes_agreement():
    pairs = [pair_record(verdict("main", f"e{i}", main, mc), verdict("canary", f"e{i}", canary, cc)) for i, (main, mc, canary, cc)
             in enumerate([(RiskLevel.safe, [], RiskLevel.safe, []),
                           (RiskLevel.unsafe, ["Violent"], RiskLevel.unsafe, ["Violent"]),
                           (RiskLevel.unsafe, ["Violent"], RiskLevel.controversial, ["PII"]),
                           (RiskLevel.safe, [], RiskLevel.unsafe, ["PII"])])]
    streams = [pair_record(verdict("main", f"s{i}", RiskLevel.unsafe, stream=final(stop=m)),
                           verdict("canary", f"s{i}", RiskLevel.unsafe, stream=final(stop=c)))
               for i, (m, c) in enumerate([(10, 10), (10, 6), (10, 13), (10, None), (None, None)])]
    report = CanaryReport(pairs + pairs[:2] + streams)  # the replayed two count once
    assert report.pairs("gen") == 4 and report.agreement("gen") == 0.5
    assert report.confusion["gen"][("Unsafe", "Controversial")] == 1
    assert report.category_agreement("gen") == {"PII": 0.0, "Violent": 0.5}
    assert report.stops == {"same": 1, "canary_earlier": 1, "canary_later": 1, "main_only": 1, "neither": 1}
    assert report.stop_deltas == {"same": [0], "canary_earlier": [-4], "canary_later": [3]}
    text = "\n".join(report.lines())
    assert "gen: 4 pairs, risk levels agree on 50.0%" in text and "canary earlier 1 (by 4.0 tokens" in text
    assert report.summary()["variants"]["gen"]["confusion"]["Safe"] == {"Safe": 1, "Unsafe": 1}

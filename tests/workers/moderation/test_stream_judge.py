"""The judge alone, with no model and no table: token verdicts in, chunk and stream verdicts out,
under the tenant's policy."""

from __future__ import annotations

from guardstream.schemas import Action, RiskLevel, TokenChunkEvent
from guardstream.workers.engines.stream_engine import StreamAnswer, TokenVerdict
from guardstream.wire.policy import PoliciesInForce, Policy
from guardstream.workers.moderation.rules import StreamRules
from guardstream.workers.moderation.stream_judge import StreamJudge
from guardstream.workers.moderation.stream_sequence import Ready
from guardstream.workers.moderation.stream_state import StreamRef, StreamState

POLICY = Policy.model_validate({"default": {"mode": "strict", "fail_mode": "closed"},
                                "tenants": {"open": {"mode": "loose", "fail_mode": "open"}}})


def token(label: str, category: str = "None") -> TokenVerdict:
    return TokenVerdict(label, {label: 0.9}, category, 0.9)


def ready(state: StreamState, *sizes: int, final: bool = False) -> Ready:
    start = state.next_seq
    chunks = [TokenChunkEvent(event_id=f"e-{start + i}", conversation_id="c", stream_id="s", tenant=state.tenant,
                              seq=start + i, token_ids=[1] * n, final=final and i == len(sizes) - 1,
                              **({"prompt": "p"} if start + i == 0 else {})) for i, n in enumerate(sizes)]
    state.next_seq += len(sizes)
    return Ready(StreamRef(state.tenant, "c", "s"), state, chunks, [[1] * n for n in sizes])


def test_debounced_unsafe_tokens_stop_once_and_block_what_follows():
    judge, state = StreamJudge(StreamRules(policies=PoliciesInForce(POLICY), debounce=2), "m"), StreamState(tenant="t")
    tokens = [token("Safe"), token("Unsafe", "Violent"), token("Safe"), token("Unsafe", "Violent"), token("Unsafe", "Violent"),
              token("Safe")]
    verdicts = judge.verdicts(ready(state, 3, 3), StreamAnswer("s", tokens=tokens), None, 1.0)
    assert [v.action for v in verdicts] == [Action.allow, Action.stop]
    assert verdicts[1].stream.stop_token == 4 and verdicts[1].stream.first_unsafe_token == 1
    later = judge.verdicts(ready(state, 1, final=True), StreamAnswer("s", tokens=[token("Safe")]), None, 1.0)
    assert [v.action for v in later] == [Action.block, Action.block] and later[1].stream.final
    assert later[1].risk_level is RiskLevel.unsafe and later[1].categories == ["Violent"]


def test_the_prompt_verdict_comes_once_with_the_opening_answer():
    judge, state = StreamJudge(StreamRules(policies=PoliciesInForce(POLICY)), "m"), StreamState(tenant="t")
    first = judge.verdicts(ready(state, 1), StreamAnswer("s", query=token("Unsafe", "Jailbreak"), tokens=[token("Safe")]), None, 1.0)
    assert [(v.moderate.value, v.action) for v in first] == [("prompt", Action.block), ("response", Action.allow)]
    again = judge.verdicts(ready(state, 1), StreamAnswer("s", query=token("Unsafe"), tokens=[token("Safe")]), None, 1.0)
    assert [v.moderate.value for v in again] == ["response"]


def test_a_failure_follows_the_fail_mode_and_stops_a_fail_closed_stream_once():
    judge = StreamJudge(StreamRules(policies=PoliciesInForce(POLICY)), "m")
    closed = StreamState(tenant="t")
    verdicts = judge.verdicts(ready(closed, 2, 2), StreamAnswer("s"), "stream pool unavailable", 1.0)
    assert [v.action for v in verdicts] == [Action.stop, Action.block] and verdicts[0].stream.stop_token == 0
    assert all(v.risk_level is RiskLevel.error and v.error == "stream pool unavailable" for v in verdicts)
    opened = StreamState(tenant="open")
    assert [v.action for v in judge.verdicts(ready(opened, 2), StreamAnswer("s"), "down", 1.0)] == [Action.allow]


def test_review_marks_the_chunk_and_the_whole_stream_and_too_long_decides_the_final():
    policy = Policy.model_validate({"default": {"review_thresholds": {"Unsafe": 0.5}, "too_long_action": "review"}})
    judge, state = StreamJudge(StreamRules(policies=PoliciesInForce(policy)), "m"), StreamState(tenant="t")
    risky = TokenVerdict("Safe", {"Safe": 0.4, "Unsafe": 0.6}, "None", 0.9)
    r = ready(state, 1, 1)
    r.too_long = ("e-9", "stream too long")
    verdicts = judge.verdicts(r, StreamAnswer("s", tokens=[token("Safe"), risky]), None, 1.0)
    assert [v.action for v in verdicts] == [Action.allow, Action.review, Action.review]
    assert verdicts[-1].stream.final and verdicts[-1].source_event_id == "e-9" and verdicts[-1].stream.stop_token is None


def test_a_prompt_sent_to_review_carries_its_text_only_where_the_policy_keeps_it():
    review = {"category_actions": {"Jailbreak": "review"}}
    policy = Policy.model_validate({"tenants": {"kept": {**review, "review": {"store_text": True}}, "bare": review}})
    judge = StreamJudge(StreamRules(policies=PoliciesInForce(policy)), "m")
    for tenant, text in (("kept", [{"role": "user", "content": "p"}]), ("bare", None)):
        opened = judge.verdicts(ready(StreamState(tenant=tenant), 1), StreamAnswer(
            "s", query=token("Unsafe", "Jailbreak"), tokens=[token("Safe")]), None, 1.0)
        prompt, reply = opened
        assert prompt.action is Action.review and reply.conversation is None
        assert (prompt.model_dump(mode="json")["conversation"]) == text, tenant


OBSERVING = Policy.model_validate({"tenants": {"watched": {"mode": "observe"},
                                               "partly": {"category_actions": {"Violent": "observe"}}}})
UNSAFE_RUN = [token("Safe"), token("Unsafe", "Violent"), token("Unsafe", "Violent"), token("Safe")]


def test_an_observed_stream_is_never_stopped_and_records_where_it_would_have_been():
    judge, state = StreamJudge(StreamRules(policies=PoliciesInForce(OBSERVING), debounce=2), "m"), StreamState(tenant="watched")
    verdicts = judge.verdicts(ready(state, 2, 2), StreamAnswer("s", tokens=UNSAFE_RUN), None, 1.0)
    verdicts += judge.verdicts(ready(state, 1, final=True), StreamAnswer("s", tokens=[token("Unsafe", "Violent")]), None, 1.0)
    assert [v.action for v in verdicts] == [Action.allow] * 4 and state.stop_token is None
    assert [v.would_action for v in verdicts] == [Action.allow, Action.stop, Action.block, Action.block]
    assert all(v.observed for v in verdicts) and verdicts[-1].stream.final
    assert {v.stream.would_stop_token for v in verdicts[1:]} == {2} and verdicts[0].stream.would_stop_token is None
    assert all(v.policy_version == "watched@0" for v in verdicts)
    failed = judge.verdicts(ready(StreamState(tenant="watched"), 2), StreamAnswer("s"), "down", 1.0)
    assert [(v.action, v.would_action, v.stream.would_stop_token) for v in failed] == [(Action.allow, Action.stop, 0)]


def test_an_observed_category_never_stops_the_stream_while_the_others_still_do():
    judge = StreamJudge(StreamRules(policies=PoliciesInForce(OBSERVING), debounce=2), "m")
    violent = StreamState(tenant="partly")
    verdicts = judge.verdicts(ready(violent, 2, 2), StreamAnswer("s", tokens=UNSAFE_RUN), None, 1.0)
    # the first chunk's Violent token was observed (one token: the debounce would not have tripped yet)
    assert [(v.action, v.would_action, v.observed) for v in verdicts] == [(Action.allow, Action.allow, True),
                                                                            (Action.allow, Action.stop, True)]
    assert violent.stop_token is None and violent.would_stop == 2
    jailbreak = StreamState(tenant="partly")
    tokens = [token("Unsafe", "Jailbreak")] * 2
    assert [v.action for v in judge.verdicts(ready(jailbreak, 2), StreamAnswer("s", tokens=tokens), None, 1.0)] == [Action.stop]
    assert jailbreak.would_stop is None  # enforced where it tripped: nothing only observed


def test_a_streams_verdicts_carry_its_language_and_its_entry_decides():
    """The Spanish entry reviews Violent; the tenant blocks it: the same tokens, one stream each."""
    policy = Policy.model_validate({"default": {"languages": {"es": {"category_actions": {"Violent": "review"}}}}})
    judge = StreamJudge(StreamRules(policies=PoliciesInForce(policy), debounce=2), "m")
    spanish, unnamed = StreamState(tenant="t", language="es"), StreamState(tenant="t")
    tokens = [token("Unsafe", "Violent"), token("Unsafe", "Violent")]
    es = judge.verdicts(ready(spanish, 2, final=True), StreamAnswer("s", tokens=tokens), None, 1.0)
    other = judge.verdicts(ready(unnamed, 2, final=True), StreamAnswer("s", tokens=tokens), None, 1.0)
    assert [(v.language, v.action) for v in es] == [("es", Action.review), ("es", Action.review)]
    assert [(v.language, v.action) for v in other] == [(None, Action.stop), (None, Action.block)]

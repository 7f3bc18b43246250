"""The Gen step with a fake pool: verdict fields, fail modes, dead letters."""

import json

from guardstream.schemas import Action, Moderate, RiskLevel, content_digest, verdict_id
from guardstream.schemas.intake import RawRecord
from guardstream.wire.policy import PoliciesInForce, Policy
from guardstream.workers.moderation.rules import GenRules
from guardstream.workers.engines.messages import GenResult
from guardstream.workers.engines.gen_output import parse_gen_output
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.pools.unavailable import GenUnavailable

POLICY = Policy.model_validate({"tenants": {"loose": {"mode": "loose", "fail_mode": "open"}}})


class ScriptedPool:
    """Answers each request with the output scripted for its last message."""

    def __init__(self, outputs: dict[str, str] | None = None, down: bool = False):
        self.outputs, self.down, self.calls = outputs or {}, down, []

    async def classify(self, requests):
        self.calls.append(requests)
        if self.down:
            raise GenUnavailable("RayActorError: actor died")
        results = []
        for r in requests:
            text = self.outputs[r.messages[-1]["content"]]
            try:
                results.append(GenResult(parse_gen_output(text, r.moderate), text, None, 1.0, {"Safe": 0.5, "Unsafe": 0.4,
                                                                                               "Controversial": 0.1}))
            except ValueError as exc:
                results.append(GenResult(None, text, f"malformed model output: {exc}", 1.0))
        return results


def rec(offset: int, tenant: str, content: str, **extra) -> RawRecord:
    event = {"event_id": f"e{offset}", "conversation_id": f"c{offset}", "tenant": tenant,
             "messages": [{"role": "user", "content": content}], **extra}
    return RawRecord("guard.conversations", 0, offset, f"c{offset}".encode(), json.dumps(event).encode())


async def test_verdicts_carry_judgement_policy_action_and_deterministic_id():
    pool = ScriptedPool({"hi": "Safety: Safe\nCategories: None", "hmm": "Safety: Controversial\nCategories: Politically Sensitive Topics"})
    moderator = GenModerator(GenRules(policies=PoliciesInForce(POLICY)), pool, "tiny")
    verdicts, dead = await moderator.moderate([rec(1, "strict", "hi"), rec(2, "strict", "hmm"), rec(3, "loose", "hmm")])
    assert dead == []
    assert [(v.source_event_id, v.risk_level, v.action) for v in verdicts] == [
        ("e1", RiskLevel.safe, Action.allow), ("e2", RiskLevel.controversial, Action.block),
        ("e3", RiskLevel.controversial, Action.allow)]
    judged = content_digest("prompt", [{"role": "user", "content": "hi"}])
    assert verdicts[0].verdict_id == verdict_id("strict", "c1", "e1", "tiny", Moderate.prompt, judged, "default@0")
    assert verdicts[2].policy == "tenant=loose mode=loose fail=open"
    assert all(v.excerpt is None and v.model_variant == "gen" for v in verdicts)


async def test_malformed_output_is_an_error_verdict_under_the_fail_mode():
    pool = ScriptedPool({"x": "I refuse to answer in your format"})
    verdicts, _ = await GenModerator(GenRules(policies=PoliciesInForce(POLICY)), pool, "tiny").moderate(
        [rec(1, "strict", "x"), rec(2, "loose", "x")])
    assert [(v.risk_level, v.action) for v in verdicts] == [(RiskLevel.error, Action.block), (RiskLevel.error, Action.allow)]
    assert "no 'Safety:' line" in verdicts[0].error
    assert all("refuse" not in v.error for v in verdicts)  # the output is not copied while text is not stored
    shown, _ = await GenModerator(GenRules(policies=PoliciesInForce(POLICY), store_text=True), pool,
                                  "tiny").moderate([rec(3, "strict", "x")])
    assert "I refuse to answer" in shown[0].error


async def test_an_unavailable_pool_still_yields_one_verdict_per_event():
    verdicts, _ = await GenModerator(GenRules(policies=PoliciesInForce(POLICY)), ScriptedPool(down=True), "tiny").moderate(
        [rec(1, "strict", "a"), rec(2, "loose", "b")])
    assert [(v.risk_level, v.action) for v in verdicts] == [(RiskLevel.error, Action.block), (RiskLevel.error, Action.allow)]
    assert all("gen pool unavailable" in v.error for v in verdicts)


async def test_bad_records_become_dead_letters_and_never_reach_the_model():
    pool = ScriptedPool({"ok": "Safety: Safe\nCategories: None"})
    bad = RawRecord("guard.conversations", 1, 7, None, b"{not json")
    verdicts, dead = await GenModerator(GenRules(), pool, "tiny").moderate([bad, rec(8, "t", "ok")])
    assert [v.source_event_id for v in verdicts] == ["e8"]
    assert [(d.offset, d.error_code) for d in dead] == [(7, "not_json")]
    assert [r.messages[-1]["content"] for r in pool.calls[0]] == ["ok"]


async def test_text_is_included_only_when_configured():
    pool = ScriptedPool({"secret": "Safety: Safe\nCategories: None"})
    verdicts, _ = await GenModerator(GenRules(store_text=True), pool, "tiny").moderate([rec(1, "t", "secret")])
    assert verdicts[0].excerpt == "secret"


async def test_probabilities_reach_the_verdict_and_the_policy():
    policy = Policy.model_validate({"default": {"review_thresholds": {"Unsafe": 0.3}}})
    pool = ScriptedPool({"hm": "Safety: Safe\nCategories: None"})
    verdicts, _ = await GenModerator(GenRules(policies=PoliciesInForce(policy)), pool, "tiny").moderate([rec(1, "t", "hm")])
    assert verdicts[0].probabilities == {"Safe": 0.5, "Unsafe": 0.4, "Controversial": 0.1}
    assert verdicts[0].action is Action.review


async def test_an_unsafe_threshold_decides_by_the_probability_and_the_verdict_keeps_the_models_label():
    """P(Unsafe) 0.4 and P(Controversial) 0.1 against 0.45: strict reads 0.5 and blocks what the model
    called Safe; loose reads 0.4 and allows it."""
    policy = Policy.model_validate({"tenants": {"s": {"unsafe_threshold": 0.45},
                                                "l": {"mode": "loose", "unsafe_threshold": 0.45}}})
    pool = ScriptedPool({"hm": "Safety: Safe\nCategories: None"})
    verdicts, _ = await GenModerator(GenRules(policies=PoliciesInForce(policy)), pool, "tiny").moderate(
        [rec(1, "s", "hm"), rec(2, "l", "hm")])
    assert [(v.risk_level, v.action) for v in verdicts] == [(RiskLevel.safe, Action.block), (RiskLevel.safe, Action.allow)]
    assert verdicts[0].policy == "tenant=s mode=strict fail=closed threshold=0.45"


class SpanishOrNot:
    """A detector that knows one language: Spanish, by its opening question mark."""

    def languages_of(self, texts: list[str]) -> list[str | None]:
        return ["es" if text.startswith("¿") else None for text in texts]


async def test_an_events_language_picks_its_policy_entry_and_the_verdict_says_which():
    """P(Unsafe) 0.4 + P(Controversial) 0.1: the tenant's threshold 0.45 blocks; its Spanish entry's 0.6 allows."""
    policy = Policy.model_validate({"default": {"unsafe_threshold": 0.45, "languages": {"es": {"unsafe_threshold": 0.6}}}})
    pool = ScriptedPool({"hm": "Safety: Safe\nCategories: None", "¿hm?": "Safety: Safe\nCategories: None"})
    rules = GenRules(policies=PoliciesInForce(policy), detector=SpanishOrNot())
    verdicts, _ = await GenModerator(rules, pool, "tiny").moderate(
        [rec(1, "t", "hm", language="es"), rec(2, "t", "¿hm?"), rec(3, "t", "hm"), rec(4, "t", "¿hm?", language="en")])
    assert [(v.language, v.action) for v in verdicts] == [("es", Action.allow), ("es", Action.allow), (None, Action.block),
                                                          ("en", Action.block)]  # the producer's language wins
    assert verdicts[0].policy == "tenant=t mode=strict fail=closed threshold=0.6"


async def test_a_language_that_is_not_a_bcp47_tag_is_a_dead_letter():
    verdicts, dead = await GenModerator(GenRules(), ScriptedPool(), "tiny").moderate([rec(1, "t", "hm", language="Spanish")])
    assert verdicts == [] and dead[0].error_code == "invalid_schema" and "language" in dead[0].error


class TooLongPool:
    async def classify(self, requests):
        from guardstream.workers.engines.gen_engine import too_long
        return [too_long(9000, 4000) for _ in requests]


async def test_a_conversation_too_long_for_the_model_follows_too_long_action_not_the_fail_mode():
    policy = Policy.model_validate({"tenants": {"loose": {"mode": "loose", "fail_mode": "open"},
                                                "lenient": {"fail_mode": "open", "too_long_action": "review"}}})
    moderator = GenModerator(GenRules(policies=PoliciesInForce(policy)), TooLongPool(), "tiny")
    verdicts, _ = await moderator.moderate([rec(1, "strict", "a"), rec(2, "loose", "b"), rec(3, "lenient", "c")])
    assert [(v.risk_level, v.action) for v in verdicts] == [(RiskLevel.error, Action.block), (RiskLevel.error, Action.block),
                                                           (RiskLevel.error, Action.review)]
    assert all(v.error.startswith("too_long: the templated conversation is 9000 tokens") for v in verdicts)

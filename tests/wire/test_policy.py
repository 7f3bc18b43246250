import json

import pytest
from pydantic import ValidationError

from guardstream.schemas import Action, RiskLevel
from guardstream.wire.policy import PoliciesInForce, Policy, TenantPolicy


@pytest.mark.parametrize("mode, risk, expected", [
    ("strict", RiskLevel.safe, Action.allow),
    ("strict", RiskLevel.controversial, Action.block),
    ("loose", RiskLevel.controversial, Action.allow),
    ("strict", RiskLevel.unsafe, Action.block),
    ("loose", RiskLevel.unsafe, Action.block),
])
def test_strict_treats_controversial_as_unsafe_and_loose_as_safe(mode, risk, expected):
    assert TenantPolicy(mode=mode).decide(risk, ["Violent"] if risk is not RiskLevel.safe else []).action is expected


def test_fail_mode_decides_errors():
    assert TenantPolicy(fail_mode="closed").decide(RiskLevel.error, []).action is Action.block
    assert TenantPolicy(fail_mode="open").decide(RiskLevel.error, []).action is Action.allow


def test_each_category_takes_its_override_or_the_unsafe_action_and_the_most_severe_wins():
    policy = TenantPolicy(unsafe_action="block", category_actions={"PII": "review", "Jailbreak": "allow"})
    assert policy.decide(RiskLevel.unsafe, ["PII"]).action is Action.review
    assert policy.decide(RiskLevel.unsafe, ["Jailbreak"]).action is Action.allow
    assert policy.decide(RiskLevel.unsafe, ["Jailbreak", "PII"]).action is Action.review
    # a category without an override counts as unsafe_action: an override never downgrades the others
    assert policy.decide(RiskLevel.unsafe, ["Violent", "PII"]).action is Action.block
    assert policy.decide(RiskLevel.unsafe, ["Jailbreak", "Violent"]).action is Action.block
    assert policy.decide(RiskLevel.unsafe, ["Violent"]).action is Action.block
    assert policy.decide(RiskLevel.unsafe, []).action is Action.block
    assert policy.decide(RiskLevel.safe, ["PII"]).action is Action.allow
    lenient = TenantPolicy(unsafe_action="review", category_actions={"Violent": "block"})
    assert lenient.decide(RiskLevel.unsafe, ["PII"]).action is Action.review
    assert lenient.decide(RiskLevel.unsafe, ["PII", "Violent"]).action is Action.block


def test_tenant_overrides_fall_back_to_default(tmp_path):
    doc = {"default": {"mode": "strict"}, "tenants": {"globex": {"mode": "loose", "fail_mode": "open"}}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    for policy in (PoliciesInForce(Policy.from_source(json.dumps(doc))), PoliciesInForce(Policy.from_source(str(path)))):
        assert policy.for_tenant("globex").mode == "loose"
        assert policy.for_tenant("anyone").mode == "strict"
        assert policy.for_tenant("globex").describe("globex") == "tenant=globex mode=loose fail=open"


def test_policy_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Extra inputs"):
        Policy.from_source('{"default": {"mode": "strict", "sternness": 11}}')


def test_an_unsafe_threshold_replaces_the_label_by_the_unsafe_probability():
    strict, loose = TenantPolicy(unsafe_threshold=0.6), TenantPolicy(mode="loose", unsafe_threshold=0.6)
    said = {"Safe": 0.35, "Controversial": 0.3, "Unsafe": 0.35}  # the model's label: Safe (or a tie)
    assert strict.thresholded(RiskLevel.safe, said) is RiskLevel.unsafe  # 0.35 + 0.3 reaches 0.6
    assert loose.thresholded(RiskLevel.safe, said) is RiskLevel.safe  # 0.35 alone does not
    assert strict.thresholded(RiskLevel.unsafe, {"Safe": 0.5, "Unsafe": 0.5}) is RiskLevel.safe  # below: allowed
    assert strict.thresholded(RiskLevel.unsafe, {"Unsafe": 0.6, "Safe": 0.4}) is RiskLevel.unsafe  # at it: flagged
    assert strict.thresholded(RiskLevel.unsafe, None) is RiskLevel.unsafe  # no probabilities: the label stands
    assert strict.thresholded(RiskLevel.error, said) is RiskLevel.error  # the fail mode still decides an error
    assert TenantPolicy().thresholded(RiskLevel.safe, said) is RiskLevel.safe  # no threshold: the label


def test_a_language_entry_lays_its_threshold_and_category_actions_over_the_tenants():
    policy = TenantPolicy.model_validate({
        "unsafe_threshold": 0.5, "category_actions": {"PII": "review", "Violent": "block"},
        "languages": {"es": {"unsafe_threshold": 0.9, "category_actions": {"Violent": "review"}}, "pt-BR": {}}})
    spanish = policy.for_language("es-MX")  # the whole tag has no entry: its primary language's
    assert (spanish.unsafe_threshold, spanish.category_actions) == (0.9, {"PII": "review", "Violent": "review"})
    assert spanish.decide(RiskLevel.unsafe, ["Violent"]).action is Action.review
    assert policy.decide(RiskLevel.unsafe, ["Violent"]).action is Action.block
    assert policy.for_language("pt-BR").unsafe_threshold == 0.5  # an empty entry keeps the tenant's
    assert policy.for_language("fr") is policy and policy.for_language(None) is policy


@pytest.mark.parametrize("languages, error", [
    ({"Spanish": {}}, "should match pattern"),
    ({"es": {"category_actions": {"Violnt": "block"}}}, "not a Qwen3Guard category"),
    ({"es": {"unsafe_threshold": 0}}, "greater than 0"),
    ({"es": {"fail_mode": "open"}}, "Extra inputs are not permitted"),  # only thresholds and category actions
    ({f"l{chr(97 + i // 26)}{chr(97 + i % 26)}": {} for i in range(65)}, "at most 64"),
])
def test_a_wrong_language_entry_is_refused(languages, error):
    with pytest.raises(ValidationError, match=error):
        TenantPolicy.model_validate({"languages": languages})


def test_language_metric_labels_are_the_languages_policies_name():
    policies = PoliciesInForce(Policy.model_validate({"tenants": {"acme": {"languages": {"es": {}}}}}))
    policies.set_tenant("globex", 1, TenantPolicy.model_validate({"languages": {"zh": {}}}))
    assert [policies.metric_language(x) for x in ("es", "zh", "fr", None, "x" * 30)] == ["es", "zh", "other", "other",
                                                                                          "other"]
    policies.set_tenant("globex", 2, None)  # its entry lifted: no policy names Chinese any more
    assert policies.metric_language("zh") == "other"


def test_review_thresholds_send_confident_near_misses_to_review():
    policy = TenantPolicy(mode="loose", review_thresholds={"Unsafe": 0.3})
    assert policy.decide(RiskLevel.safe, [], {"Safe": 0.6, "Unsafe": 0.35, "Controversial": 0.05}).action is Action.review
    assert policy.decide(RiskLevel.safe, [], {"Safe": 0.9, "Unsafe": 0.05, "Controversial": 0.05}).action is Action.allow
    assert policy.decide(RiskLevel.controversial, [], {"Unsafe": 0.31}).action is Action.review
    assert policy.decide(RiskLevel.safe, []).action is Action.allow  # no probabilities, nothing to threshold
    assert policy.decide(RiskLevel.unsafe, ["Violent"], {"Unsafe": 0.9}).action is Action.block


@pytest.mark.parametrize("risk, categories, would", [
    (RiskLevel.safe, [], Action.allow),
    (RiskLevel.controversial, ["Politically Sensitive Topics"], Action.block),  # judged as strict
    (RiskLevel.unsafe, ["PII"], Action.review),
    (RiskLevel.unsafe, ["Violent"], Action.block),
    (RiskLevel.error, [], Action.block),  # fail closed would block
])
def test_an_observed_tenant_is_always_allowed_and_told_what_would_have_been_done(risk, categories, would):
    decision = TenantPolicy(mode="observe", category_actions={"PII": "review"}).decide(risk, categories)
    assert decision.action is Action.allow and decision.observed and decision.would_action is would


def test_an_observed_category_is_allowed_while_the_others_are_enforced():
    policy = TenantPolicy(unsafe_action="block", category_actions={"Violent": "observe", "PII": "review"})
    assert policy.decide(RiskLevel.unsafe, ["Violent"]) == (Action.allow, Action.block)
    assert policy.decide(RiskLevel.unsafe, ["Violent", "PII"]) == (Action.review, Action.block)  # PII still enforced
    assert policy.decide(RiskLevel.unsafe, ["PII"]) == (Action.review, None)  # nothing observed: an ordinary decision
    assert policy.decide(RiskLevel.safe, []) == (Action.allow, None)
    assert not TenantPolicy().decide(RiskLevel.unsafe, ["Violent"]).observed


def test_the_topics_entries_lie_over_the_document_per_tenant_and_a_tombstone_lifts_them():
    policy = PoliciesInForce(Policy(default=TenantPolicy(mode="strict"), tenants={"globex": TenantPolicy(mode="loose")}))
    assert (policy.version("acme"), policy.version("globex")) == ("default@0", "globex@0")
    policy.set_tenant("acme", 3, TenantPolicy(mode="observe"))
    policy.set_tenant("default", 1, TenantPolicy(fail_mode="open"))
    assert policy.for_tenant("acme").mode == "observe" and policy.version("acme") == "acme@3"
    assert policy.for_tenant("globex").mode == "loose"  # the document names it: the topic's default does not apply
    assert policy.for_tenant("initech").fail_mode == "open" and policy.version("initech") == "default@1"
    assert policy.metric_tenant("acme") == "acme" and policy.metric_tenant("initech") == "other"
    policy.set_tenant("acme", 4, None)
    assert policy.version("acme") == "default@1" and policy.set_versions() == {"default": 1}


@pytest.mark.parametrize("document, error", [
    ({"unsafe_threshold": 0}, "greater than 0"),  # 0 would flag everything
    ({"unsafe_threshold": 1.2}, "less than or equal to 1"),
    ({"review_thresholds": {"Unsafe": -1}}, "greater than 0"),  # -1 would send every allowed verdict to review
    ({"review_thresholds": {"Unsafe": 0}}, "greater than 0"),
    ({"review_thresholds": {"Controversial": 1.5}}, "less than or equal to 1"),
    ({"review_thresholds": {"Safe": 0.5}}, "'Unsafe' or 'Controversial'"),
    ({"category_actions": {"Violence": "block"}}, "'Violence' is not a Qwen3Guard category"),  # a typo of Violent
    ({"category_actions": {"PII": "review"}, "strictness": "high"}, "Extra inputs are not permitted"),
])
def test_a_policy_document_is_validated_in_full(document, error):
    with pytest.raises(ValidationError, match=error):
        TenantPolicy.model_validate(document)
    assert TenantPolicy.model_validate({"review_thresholds": {"Unsafe": 1, "Controversial": 0.3},
                                        "category_actions": {"Jailbreak": "observe", "PII": "review"}})


def test_review_keeps_no_text_unless_told_and_its_retention_is_bounded():
    assert TenantPolicy().review.store_text is False
    kept = TenantPolicy.model_validate({"review": {"store_text": True, "retention_days": 7}}).review
    assert (kept.store_text, kept.retention_days) == (True, 7)
    for wrong in ({"retention_days": 0}, {"retention_days": 3651}, {"store_txt": True}):
        with pytest.raises(ValidationError):
            TenantPolicy.model_validate({"review": wrong})

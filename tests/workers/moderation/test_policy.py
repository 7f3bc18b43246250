import json

import pytest

from guardstream.schemas import Action, RiskLevel
from guardstream.workers.moderation.policy import Policy, TenantPolicy


@pytest.mark.parametrize("mode, risk, expected", [
    ("strict", RiskLevel.safe, Action.allow),
    ("strict", RiskLevel.controversial, Action.block),
    ("loose", RiskLevel.controversial, Action.allow),
    ("strict", RiskLevel.unsafe, Action.block),
    ("loose", RiskLevel.unsafe, Action.block),
])
def test_strict_treats_controversial_as_unsafe_and_loose_as_safe(mode, risk, expected):
    assert TenantPolicy(mode=mode).decide(risk, ["Violent"] if risk is not RiskLevel.safe else []) is expected


def test_fail_mode_decides_errors():
    assert TenantPolicy(fail_mode="closed").decide(RiskLevel.error, []) is Action.block
    assert TenantPolicy(fail_mode="open").decide(RiskLevel.error, []) is Action.allow


def test_each_category_takes_its_override_or_the_unsafe_action_and_the_most_severe_wins():
    policy = TenantPolicy(unsafe_action="block", category_actions={"PII": "review", "Jailbreak": "allow"})
    assert policy.decide(RiskLevel.unsafe, ["PII"]) is Action.review
    assert policy.decide(RiskLevel.unsafe, ["Jailbreak"]) is Action.allow
    assert policy.decide(RiskLevel.unsafe, ["Jailbreak", "PII"]) is Action.review
    # a category without an override counts as unsafe_action: an override never downgrades the others
    assert policy.decide(RiskLevel.unsafe, ["Violent", "PII"]) is Action.block
    assert policy.decide(RiskLevel.unsafe, ["Jailbreak", "Violent"]) is Action.block
    assert policy.decide(RiskLevel.unsafe, ["Violent"]) is Action.block
    assert policy.decide(RiskLevel.unsafe, []) is Action.block
    assert policy.decide(RiskLevel.safe, ["PII"]) is Action.allow
    lenient = TenantPolicy(unsafe_action="review", category_actions={"Violent": "block"})
    assert lenient.decide(RiskLevel.unsafe, ["PII"]) is Action.review
    assert lenient.decide(RiskLevel.unsafe, ["PII", "Violent"]) is Action.block


def test_tenant_overrides_fall_back_to_default(tmp_path):
    doc = {"default": {"mode": "strict"}, "tenants": {"globex": {"mode": "loose", "fail_mode": "open"}}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    for policy in (Policy.from_source(json.dumps(doc)), Policy.from_source(str(path))):
        assert policy.for_tenant("globex").mode == "loose"
        assert policy.for_tenant("anyone").mode == "strict"
        assert policy.for_tenant("globex").describe("globex") == "tenant=globex mode=loose fail=open"


def test_policy_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Extra inputs"):
        Policy.from_source('{"default": {"mode": "strict", "sternness": 11}}')


def test_review_thresholds_send_confident_near_misses_to_review():
    policy = TenantPolicy(mode="loose", review_thresholds={"Unsafe": 0.3})
    assert policy.decide(RiskLevel.safe, [], {"Safe": 0.6, "Unsafe": 0.35, "Controversial": 0.05}) is Action.review
    assert policy.decide(RiskLevel.safe, [], {"Safe": 0.9, "Unsafe": 0.05, "Controversial": 0.05}) is Action.allow
    assert policy.decide(RiskLevel.controversial, [], {"Unsafe": 0.31}) is Action.review
    assert policy.decide(RiskLevel.safe, []) is Action.allow  # no probabilities, nothing to threshold
    assert policy.decide(RiskLevel.unsafe, ["Violent"], {"Unsafe": 0.9}) is Action.block

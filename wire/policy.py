"""Policy: how a raw model judgement becomes an action, per tenant.

- strict mode treats Controversial as Unsafe, loose mode as Safe (as the model card defines);
- an unsafe verdict's action is the most severe over its categories, each taking its override
  (e.g. Politically Sensitive → review) or else `unsafe_action`;
- the fail mode decides what an `Error` verdict (model down, malformed output) does;
- `too_long_action` decides what a conversation or stream longer than the model's context (or
  `stream_max_tokens`) gets: it was not judged whole, and a fail-open tenant must not let that
  pass silently, so it is its own setting (default block), apart from the fail mode;
- review thresholds send an allowed verdict to review when a label's probability is high enough
  (e.g. {"Unsafe": 0.3}), for models that report probabilities;
- an unsafe threshold decides Gen's verdicts by the unsafe probability instead of the label
  (`guardstream eval --calibrate` picks one for a target precision or recall on labelled data);
- per-language entries change the threshold and category actions for an event in that language
  (the producer's `language`, else the worker's detector), over the tenant's own;
- observe mode (`"mode": "observe"` for a tenant, judged as strict, or `"observe"` as a category's
  action, which would be `unsafe_action`) decides as usual but allows: the decision says what
  enforcement would have done (`would_action`), so a policy can be tried on live traffic first.

The policy in force is the starting document (`GUARDSTREAM_POLICY`) with, over it, what the
policies topic has set per tenant since: `PoliciesInForce`, owned by the feed that reads the topic
(`wire/policy_feed.py`) and only read by everything else. A tenant the topic names takes its entry
there, else the document's, else the topic's `default`, else the document's default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guardstream.schemas import Action, RiskLevel
from guardstream.schemas.events import LanguageTag
from guardstream.schemas.labels import QUERY_CATEGORIES

_SEVERITY = {Action.allow: 0, Action.review: 1, Action.block: 2, Action.stop: 3}


def most_severe(*actions: Action) -> Action:
    return max(actions, key=_SEVERITY.__getitem__)


def unsafe_probability(probabilities: dict[str, float], strict: bool) -> float:
    """P(Unsafe), plus P(Controversial) where Controversial counts as unsafe."""
    return probabilities.get("Unsafe", 0.0) + (probabilities.get("Controversial", 0.0) if strict else 0.0)


class Decision(NamedTuple):
    action: Action  # what is done
    would_action: Action | None = None  # observed: what enforcement would have done (the action is then allow)

    @property
    def observed(self) -> bool:
        return self.would_action is not None


MAX_LANGUAGES = 64  # entries in one tenant's policy
CategoryActions = dict[str, Action | Literal["observe"]]
Threshold = Annotated[float, Field(gt=0, le=1)]


def known_categories(actions: dict) -> dict:
    """A category the model never names would be silently ignored: a typo is refused instead."""
    if unknown := sorted(set(actions) - set(QUERY_CATEGORIES)):
        raise ValueError(f"{', '.join(map(repr, unknown))} is not a Qwen3Guard category; the categories are "
                         f"{', '.join(QUERY_CATEGORIES)}")
    return actions


class LanguagePolicy(BaseModel):
    """What a tenant's policy changes for events in one language: the unsafe threshold, and
    category actions laid over the tenant's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    unsafe_threshold: Threshold | None = None
    category_actions: CategoryActions = Field(default_factory=dict)

    _categories_are_the_models = field_validator("category_actions")(known_categories)


class ReviewPolicy(BaseModel):
    """What the review queue keeps of a tenant's items: the conversation's text only when told to,
    and only for `retention_days`; without it reviewers see the judgement and metadata alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    store_text: bool = False
    retention_days: int = Field(default=30, ge=1, le=3650)


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["strict", "loose", "observe"] = "strict"
    fail_mode: Literal["closed", "open"] = "closed"
    unsafe_action: Action = Action.block
    category_actions: CategoryActions = Field(default_factory=dict)
    # a label's probability from which an allowed verdict goes to review; above 0 (0 would send
    # everything) and at most 1; "Safe" has none (a safe verdict is what is allowed)
    review_thresholds: dict[Literal["Unsafe", "Controversial"], Annotated[float, Field(gt=0, le=1)]] = \
        Field(default_factory=dict)
    too_long_action: Action = Action.block
    # Gen's verdicts: unsafe when the unsafe probability reaches it, safe when it does not, whatever
    # the label (a verdict without probabilities keeps its label; the Stream heads keep theirs)
    unsafe_threshold: Threshold | None = None
    # by language tag ("es", or "pt-BR" before "pt"): what changes for an event in that language
    languages: dict[LanguageTag, LanguagePolicy] = Field(default_factory=dict, max_length=MAX_LANGUAGES)
    review: ReviewPolicy = Field(default_factory=ReviewPolicy)

    _categories_are_the_models = field_validator("category_actions")(known_categories)

    def for_language(self, language: str | None) -> TenantPolicy:
        """The policy for an event in `language`: its entry (the whole tag's, else its primary
        language's) laid over this one; this one where none matches."""
        entry = self.languages.get(language) or self.languages.get(language.split("-")[0]) if language else None
        if entry is None:
            return self
        threshold = self.unsafe_threshold if entry.unsafe_threshold is None else entry.unsafe_threshold
        return self.model_copy(update={"unsafe_threshold": threshold, "languages": {},
                                       "category_actions": {**self.category_actions, **entry.category_actions}})

    @property
    def strict(self) -> bool:
        """Controversial counts as unsafe (observe mode judges as strict does)."""
        return self.mode != "loose"

    def thresholded(self, risk: RiskLevel, probabilities: dict[str, float] | None) -> RiskLevel:
        """The risk Gen's verdict is decided as: by `unsafe_threshold` where it is set and the model
        gave probabilities, else the model's label."""
        if self.unsafe_threshold is None or not probabilities or risk is RiskLevel.error:
            return risk
        return RiskLevel.unsafe if unsafe_probability(probabilities, self.strict) >= self.unsafe_threshold else RiskLevel.safe

    def decide(self, risk: RiskLevel, categories: list[str], probabilities: dict[str, float] | None = None) -> Decision:
        if risk is RiskLevel.error:
            return self.observing(Action.block if self.fail_mode == "closed" else Action.allow)
        if risk is RiskLevel.safe or (risk is RiskLevel.controversial and not self.strict):
            crossed = any((probabilities or {}).get(label, 0.0) >= at for label, at in self.review_thresholds.items())
            return self.observing(Action.review if crossed else Action.allow)
        # each category takes its override or else unsafe_action; the most severe of them applies
        actions = {c: self.category_actions.get(c, self.unsafe_action) for c in categories or [None]}
        would = most_severe(*(self.unsafe_action if a == "observe" else a for a in actions.values()))
        if self.mode == "observe" or "observe" not in actions.values():
            return self.observing(would)
        enforced = [a for a in actions.values() if a != "observe"]
        return Decision(most_severe(*enforced) if enforced else Action.allow, would)

    def observing(self, would: Action) -> Decision:
        """The decision for an action the rules give: allowed and recorded in observe mode."""
        return Decision(Action.allow, would) if self.mode == "observe" else Decision(would)

    def describe(self, tenant: str) -> str:
        threshold = "" if self.unsafe_threshold is None else f" threshold={self.unsafe_threshold:g}"
        return f"tenant={tenant} mode={self.mode} fail={self.fail_mode}{threshold}"


class Policy(BaseModel):
    """A policy document: a default and the tenants it names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    default: TenantPolicy = Field(default_factory=TenantPolicy)
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)

    @classmethod
    def from_source(cls, source: str) -> Policy:
        """A JSON document, or the path of a JSON file."""
        text = source if source.lstrip().startswith("{") else Path(source).read_text()
        return cls.model_validate(json.loads(text))


class PoliciesInForce:
    """The starting document with the policies topic's entries laid over it. Its feed sets them
    (`set_tenant`); the rules, the agents and the gateways read them as they change."""

    def __init__(self, document: Policy | None = None):
        self.document = document or Policy()
        self.entries: dict[str, tuple[int, TenantPolicy]] = {}  # key → (version, policy), from the topic
        self._named_languages = self._languages_named()  # the language metric labels, kept as entries change

    def _entry(self, tenant: str) -> tuple[str, int, TenantPolicy]:
        if tenant in self.entries:
            return tenant, *self.entries[tenant]
        if tenant in self.document.tenants:
            return tenant, 0, self.document.tenants[tenant]
        if "default" in self.entries:
            return "default", *self.entries["default"]
        return "default", 0, self.document.default

    def for_tenant(self, tenant: str) -> TenantPolicy:
        return self._entry(tenant)[2]

    def version(self, tenant: str) -> str:
        """Which entry decides for the tenant, and its version: `acme@3` (the topic's third for
        acme), `default@0` (the starting document's default)."""
        key, version, _ = self._entry(tenant)
        return f"{key}@{version}"

    def set_tenant(self, key: str, version: int, policy: TenantPolicy | None) -> None:
        """The topic's entry for a tenant (or `default`); None (a tombstone) falls back to the document."""
        if policy is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = (version, policy)
        self._named_languages = self._languages_named()

    def set_versions(self) -> dict[str, int]:
        """The version in force of each key the topic has set."""
        return {key: version for key, (version, _) in self.entries.items()}

    def metric_tenant(self, tenant: str) -> str:
        """The tenant as a metric label: tenants these policies name (in the document or on the topic)
        keep their name, all others are `other`, so tenant names that producers make up cannot grow
        the series without bound."""
        return tenant if tenant in self.document.tenants or tenant in self.entries or tenant == "default" else "other"

    def metric_language(self, language: str | None) -> str:
        """A verdict's language as a metric label: a language some policy in force names keeps its
        tag; every other one, and none, is `other` (at most MAX_LANGUAGES tags per policy)."""
        return language if language in self._named_languages else "other"

    def _languages_named(self) -> frozenset[str]:
        policies = [self.document.default, *self.document.tenants.values(), *(p for _, p in self.entries.values())]
        return frozenset(language for p in policies for language in p.languages)

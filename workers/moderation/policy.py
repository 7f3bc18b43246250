"""Policy: how a raw model judgement becomes an action, per tenant.

- strict mode treats Controversial as Unsafe, loose mode as Safe (as the model card defines);
- an unsafe verdict's action is the most severe over its categories, each taking its override
  (e.g. Politically Sensitive → review) or else `unsafe_action`;
- the fail mode decides what an `Error` verdict (model down, malformed output) does;
- `too_long_action` decides what a conversation or stream longer than the model's context (or
  `stream_max_tokens`) gets: it was not judged whole, and a fail-open tenant must not let that
  pass silently, so it is its own setting (default block), apart from the fail mode;
- review thresholds send an allowed verdict to review when a label's probability is high enough
  (e.g. {"Unsafe": 0.3}), for models that report probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from guardstream.schemas import Action, RiskLevel

_SEVERITY = {Action.allow: 0, Action.review: 1, Action.block: 2, Action.stop: 3}


def most_severe(*actions: Action) -> Action:
    return max(actions, key=_SEVERITY.__getitem__)


class TenantPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["strict", "loose"] = "strict"
    fail_mode: Literal["closed", "open"] = "closed"
    unsafe_action: Action = Action.block
    category_actions: dict[str, Action] = Field(default_factory=dict)
    review_thresholds: dict[str, float] = Field(default_factory=dict)
    too_long_action: Action = Action.block

    def decide(self, risk: RiskLevel, categories: list[str], probabilities: dict[str, float] | None = None) -> Action:
        if risk is RiskLevel.error:
            return Action.block if self.fail_mode == "closed" else Action.allow
        if risk is RiskLevel.safe or (risk is RiskLevel.controversial and self.mode == "loose"):
            crossed = any((probabilities or {}).get(label, 0.0) >= at for label, at in self.review_thresholds.items())
            return Action.review if crossed else Action.allow
        # each category takes its override or else unsafe_action; the most severe of them applies
        return most_severe(*(self.category_actions.get(c, self.unsafe_action) for c in categories or [None]))

    def describe(self, tenant: str) -> str:
        return f"tenant={tenant} mode={self.mode} fail={self.fail_mode}"


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default: TenantPolicy = Field(default_factory=TenantPolicy)
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)

    def for_tenant(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant, self.default)

    def metric_tenant(self, tenant: str) -> str:
        """The tenant as a metric label: tenants this policy names keep their name, all others are
        `other`, so tenant names that producers make up cannot grow the series without bound."""
        return tenant if tenant in self.tenants or tenant == "default" else "other"

    @classmethod
    def from_source(cls, source: str) -> Policy:
        """A JSON document, or the path of a JSON file."""
        text = source if source.lstrip().startswith("{") else Path(source).read_text()
        return cls.model_validate(json.loads(text))

"""Parsing Qwen3Guard-Gen's answer block (`Safety:` / `Categories:` / `Refusal:`).

Anything the model did not format is reported as a `MalformedOutput`, never guessed at: the
caller turns it into an `Error` verdict that the policy's fail mode handles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guardstream.schemas import Moderate, RiskLevel
from guardstream.schemas.labels import QUERY_CATEGORIES

KNOWN_CATEGORIES = QUERY_CATEGORIES
_SAFETY = re.compile(r"^\s*Safety:\s*(\S+)\s*$", re.MULTILINE)
_CATEGORIES = re.compile(r"^\s*Categories:\s*(.*?)\s*$", re.MULTILINE)
_REFUSAL = re.compile(r"^\s*Refusal:\s*(\S+)\s*$", re.MULTILINE)


class MalformedOutput(ValueError):
    pass


@dataclass(frozen=True)
class GenJudgement:
    risk_level: RiskLevel
    categories: list[str]
    refusal: bool | None


def parse_gen_output(text: str, moderate: Moderate) -> GenJudgement:
    safety = _SAFETY.search(text)
    if not safety:
        raise MalformedOutput(f"no 'Safety:' line in the model's output ({len(text)} chars)")
    try:
        risk = RiskLevel(safety.group(1))
    except ValueError:
        raise MalformedOutput(f"an unknown safety label ({len(safety.group(1))} chars)") from None
    if risk is RiskLevel.error:
        raise MalformedOutput("the model cannot answer 'Safety: Error'")

    categories_line = _CATEGORIES.search(text)
    if not categories_line:
        raise MalformedOutput(f"no 'Categories:' line in the model's output ({len(text)} chars)")
    categories = [c.strip() for c in categories_line.group(1).split(",") if c.strip()]
    if categories == ["None"]:
        categories = []
    unknown = [c for c in categories if c not in KNOWN_CATEGORIES]
    if unknown:
        raise MalformedOutput(f"{len(unknown)} unknown categories")

    refusal = None
    if moderate is Moderate.response:
        refusal_line = _REFUSAL.search(text)
        if not refusal_line or refusal_line.group(1) not in ("Yes", "No"):
            raise MalformedOutput(f"response moderation needs 'Refusal: Yes|No', which the model's output "
                                  f"({len(text)} chars) lacks")
        refusal = refusal_line.group(1) == "Yes"
    return GenJudgement(risk, categories, refusal)

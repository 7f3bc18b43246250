"""Labelled sets, read into one shape: the project's JSONL (the fixture corpus's fields), which
`guardstream review export` writes from reviewers' decisions, and OpenAI's moderation release
(`prompt` with the flags S, H, V, HR, SH, S3, H2, V2).

OpenAI's flags map to Qwen3Guard's categories as `docs/evaluation.md` writes down: S and S3 are
Sexual Content or Sexual Acts; H and HR are Unethical Acts (Qwen3Guard's category for hate, bias
and harassment); H2 is Unethical Acts and Violent; V and V2 are Violent; SH is Suicide & Self-Harm.
An item with any flag set is Unsafe, one with none Safe; every item is a prompt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardstream.schemas import Message
from guardstream.schemas.events import LanguageTag
from guardstream.schemas.labels import QUERY_CATEGORIES
from guardstream.workers.moderation.language import LanguageDetector, event_languages

Category = Literal[QUERY_CATEGORIES]  # type: ignore[valid-type]
OPENAI_CATEGORIES: dict[str, tuple[str, ...]] = {
    "S": ("Sexual Content or Sexual Acts",), "S3": ("Sexual Content or Sexual Acts",),
    "H": ("Unethical Acts",), "HR": ("Unethical Acts",), "H2": ("Unethical Acts", "Violent"),
    "V": ("Violent",), "V2": ("Violent",), "SH": ("Suicide & Self-Harm",),
}


class LabelledItem(BaseModel):
    """One conversation and what a person judged it to be."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: str = Field(max_length=256)
    kind: Literal["prompt", "response"]
    messages: list[Message] = Field(min_length=1)
    label: Literal["Safe", "Unsafe", "Controversial"]
    categories: list[Category] = Field(default_factory=list)
    refusal: Literal["Yes", "No"] | None = None  # for a response: whether it refuses
    unsafe_from: int | None = Field(default=None, ge=0)  # a reply's first unsafe character, when marked
    language: LanguageTag | None = None  # BCP 47, as producers give it


class DatasetError(ValueError):
    """A line that is neither format, or holds a wrong field: said with its line number."""


def from_openai(number: int, row: dict) -> dict:
    flagged = sorted(flag for flag in OPENAI_CATEGORIES if row.get(flag) == 1)
    categories = list(dict.fromkeys(c for flag in flagged for c in OPENAI_CATEGORIES[flag]))
    return {"id": str(row.get("id", f"line-{number}")), "kind": "prompt", "label": "Unsafe" if flagged else "Safe",
            "messages": [{"role": "user", "content": row["prompt"]}], "categories": categories}


def from_decision(item: dict) -> dict | None:
    """A decided review item (`ReviewStore.decided`) as a labelled item: upheld, the model's tier;
    overturned, the other side (a flagged item is Safe, an allowed one Unsafe), with the reviewer's
    categories where they gave any. None for an item without text or judged `Error` (neither
    says what the text is)."""
    if item["conversation"] is None or item["risk_level"] == "Error":
        return None
    flagged = item["risk_level"] != "Safe"
    label = item["risk_level"] if item["decision"] == "uphold" else "Safe" if flagged else "Unsafe"
    categories = [] if label == "Safe" else item["decided_categories"] or item["categories"]
    return {"id": item["item_id"], "kind": item["moderate"], "messages": item["conversation"], "label": label,
            "categories": categories, **({"language": item["language"]} if item["language"] else {})}


def load(path: Path, split: str | None = None) -> list[LabelledItem]:
    """Every item of the JSONL file at `path` (of `split` only, when given and the rows name one)."""
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if split is not None and row.get("split", split) != split:
                continue
            items.append(LabelledItem.model_validate(from_openai(number, row) if "prompt" in row else row))
        except (ValueError, KeyError, ValidationError) as exc:
            raise DatasetError(f"{path}:{number}: not a labelled item ({str(exc).splitlines()[0][:300]}); the "
                               f"formats are the project's JSONL and OpenAI's moderation release") from None
    if not items:
        raise DatasetError(f"{path}: no labelled item" + (f" in split {split!r}" if split else ""))
    return items


def languages(items: list[LabelledItem], detector: LanguageDetector | None) -> list[str | None]:
    """Each item's language as a worker tells it: the item's own, else the detector's on its last
    message (None: neither says)."""
    return event_languages([(i.language, i.messages[-1].content) for i in items], detector)

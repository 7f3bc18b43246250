"""Drafts of Qwen3Guard-Gen's answer, for decoding it in a few forwards instead of one per token.

The answer after the forced `Safety:` follows a closed grammar: a label, `Categories:` with the
nine category names or `None`, and for a reply `Refusal: Yes|No`, then the end of the turn. Given
the tokens decoded so far, the draft is the rest of the first whole answer of that grammar that
starts with them; the scorer checks a draft in one forward and keeps only what greedy decoding
would have produced (`GenScorer.score`), so a wrong draft costs a forward, never a token. An
answer off the grammar (several categories, a model that rambles) gets no draft: one token a step.
"""

from __future__ import annotations

from guardstream.schemas import Moderate
from guardstream.schemas.labels import QUERY_CATEGORIES, RESPONSE_CATEGORIES, RISK_LABELS


def answers(kind: Moderate) -> list[str]:
    """Every one-category answer of the grammar, after `Safety:`: the likely ones of each label first."""
    refusals = ["\nRefusal: No", "\nRefusal: Yes"] if kind is Moderate.response else [""]
    categories = QUERY_CATEGORIES if kind is Moderate.prompt else RESPONSE_CATEGORIES
    out = []
    for label in RISK_LABELS:
        named = ["None", *categories] if label == "Safe" else [*categories, "None"]
        out += [f" {label}\nCategories: {category}{refusal}" for category in named for refusal in refusals]
    return out


class AnswerDrafts:
    """The grammar's answers as token ids (each ending with the end of the turn), and drafts from them."""

    def __init__(self, tokenizer, forced_prefix: str, end_id: int, kind: Moderate):
        forced = tokenizer(forced_prefix, add_special_tokens=False)["input_ids"]
        self.answers = []
        for text in answers(kind):
            ids = tokenizer(forced_prefix + text, add_special_tokens=False)["input_ids"]
            if ids[: len(forced)] == forced:  # a tokenizer that merged the prefix gives no draft for it
                self.answers.append(ids[len(forced):] + [end_id])

    def draft(self, decoded: list[int]) -> list[int]:
        """The rest of the first answer that starts with `decoded` (nothing when none does)."""
        n = len(decoded)
        for ids in self.answers:
            if len(ids) > n and ids[:n] == decoded:
                return ids[n:]
        return []

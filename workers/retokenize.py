"""Incremental tokenization of text deltas, for reply streams that do not come as Qwen3 token ids.

BPE merges never cross pre-token boundaries, so text up to a pre-token boundary tokenizes the same
alone as inside the whole text. The last pre-tokens are still unstable (a space may join the next
word, a letter may extend a word), so they are held back until more text or the end arrives. The
ids pushed out, concatenated, equal tokenizing the whole text at once.
"""

from __future__ import annotations


class IncrementalTokenizer:
    HOLD_BACK = 2  # pre-tokens at the end that more text can still change

    def __init__(self, tokenizer, pending: str = ""):
        self._backend = tokenizer.backend_tokenizer
        self.pending = pending  # text received but not yet turned into ids

    def push(self, delta: str) -> list[int]:
        self.pending += delta
        pieces = self._backend.pre_tokenizer.pre_tokenize_str(self.pending) if self._backend.pre_tokenizer else []
        if len(pieces) <= self.HOLD_BACK:
            return []
        cut = pieces[-self.HOLD_BACK][1][0]
        stable, self.pending = self.pending[:cut], self.pending[cut:]
        return self._encode(stable)

    def finish(self) -> list[int]:
        ids, self.pending = self._encode(self.pending), ""
        return ids

    def _encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids if text else []

"""Incremental tokenization of text deltas, for reply streams that do not come as Qwen3 token ids.

BPE merges never cross pre-token boundaries, so text up to a pre-token boundary tokenizes the same
alone as inside the whole text. The last pre-tokens are still unstable (a space may join the next
word, a letter may extend a word), so they are held back until more text or the end arrives. The
ids pushed out, concatenated, equal tokenizing the whole text at once (as text: a delta that
spells `<|im_end|>` is those characters, never the control token).

What is held back is bounded: past `MAX_PENDING_CHARS` (a run with no pre-token boundary, such as
a long unspaced string), all but that many characters are tokenized at once, so no input can hold
its verdicts back for ever; only such a run's ids may then differ from the whole text's.
"""

from __future__ import annotations

from guardstream.workers.engines.framing import encode_text


class IncrementalTokenizer:
    HOLD_BACK = 2  # pre-tokens at the end that more text can still change
    MAX_PENDING_CHARS = 256

    def __init__(self, tokenizer, pending: str = ""):
        self._tokenizer = tokenizer
        self._pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
        self.pending = pending  # text received but not yet turned into ids

    def push(self, delta: str) -> list[int]:
        self.pending += delta
        pieces = self._pre_tokenizer.pre_tokenize_str(self.pending) if self._pre_tokenizer else []
        cut = pieces[-self.HOLD_BACK][1][0] if len(pieces) > self.HOLD_BACK else 0
        cut = max(cut, len(self.pending) - self.MAX_PENDING_CHARS)
        stable, self.pending = self.pending[:cut], self.pending[cut:]
        return encode_text(self._tokenizer, stable)

    def finish(self) -> list[int]:
        ids, self.pending = encode_text(self._tokenizer, self.pending), ""
        return ids

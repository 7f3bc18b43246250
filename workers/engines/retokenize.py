"""Incremental tokenization of text deltas, for reply streams that do not come as Qwen3 token ids.

BPE merges never cross pre-token boundaries, so text up to a pre-token boundary tokenizes the same
alone as inside the whole text. The last pre-tokens are still unstable (a space may join the next
word, a letter may extend a word, a combining accent may join the letter before it under NFC), so
they are held back, normalised, until more text or the end arrives. The ids pushed out,
concatenated, equal tokenizing the whole text at once (as text: a delta that spells `<|im_end|>`
is those characters, never the control token).

What is held back is bounded, in characters (`MAX_PENDING_CHARS`) and in tokens
(`MAX_PENDING_TOKENS`): a run with no pre-token boundary, such as unspaced Chinese or Thai or a
long string of symbols, is cut and tokenized before it passes either, so no input can hold its
verdicts back for long; only such a run's ids may then differ from the whole text's.
"""

from __future__ import annotations

from guardstream.workers.engines.framing import encode_text


class IncrementalTokenizer:
    HOLD_BACK = 2  # pre-tokens at the end that more text can still change
    MAX_PENDING_CHARS = 256
    MAX_PENDING_TOKENS = 16  # about half a second of reply at 30 tokens/s

    def __init__(self, tokenizer, pending: str = ""):
        self._tokenizer = tokenizer
        self._pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
        self._normalizer = tokenizer.backend_tokenizer.normalizer
        self.pending = pending  # text received but not yet turned into ids, normalised

    def push(self, delta: str) -> list[int]:
        text = self.pending + delta
        if self._normalizer is not None:
            text = self._normalizer.normalize_str(text)
        pieces = self._pre_tokenizer.pre_tokenize_str(text) if self._pre_tokenizer else []
        cut = pieces[-self.HOLD_BACK][1][0] if len(pieces) > self.HOLD_BACK else 0
        cut = len(text) - self._bounded(text[cut:])
        stable, self.pending = text[:cut], text[cut:]
        return encode_text(self._tokenizer, stable)

    def finish(self) -> list[int]:
        ids, self.pending = encode_text(self._tokenizer, self.pending), ""
        return ids

    def _bounded(self, tail: str) -> int:
        """How many of `tail`'s last characters may stay held back."""
        keep = min(len(tail), self.MAX_PENDING_CHARS)
        # a byte-level BPE token covers at least one byte, so a tail of few bytes needs no encoding to check
        while keep > 1 and len(tail[-keep:].encode()) > self.MAX_PENDING_TOKENS \
                and len(encode_text(self._tokenizer, tail[-keep:])) > self.MAX_PENDING_TOKENS:
            keep //= 2
        return keep

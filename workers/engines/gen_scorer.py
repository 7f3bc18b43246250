"""Qwen3Guard-Gen label scoring on the plain-PyTorch Qwen3 (`workers/engines/qwen3.py`), no framework.

Each request is its token ids after a shared prefix (the policy text of the chat template). The
prefix's KV is computed once and copied into each request's KV slot, so a request prefills only
its own tokens. One padded forward over the batch gives every row's next-token logits after the
forced `Safety:`; then the few answer tokens are decoded greedily, a batched step checking each
row's guess of the rest of its answer (`gen_drafts.py`) and keeping what greedy would produce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from guardstream.workers.engines.qwen3 import KVFull, KVPool, Qwen3, Qwen3Shape

MIN_CAPACITY = 512  # tokens of a KV slot; more in powers of two


def capacity_for(span: int) -> int:
    """The KV slot size that holds `span` tokens."""
    capacity = MIN_CAPACITY
    while capacity < span:
        capacity *= 2
    return capacity


@dataclass(frozen=True)
class Scored:
    label_probabilities: list[float]  # softmax over the label tokens, in the order given
    answer_ids: list[int]  # greedy tokens after the forced prefix, stop token excluded


class GenScorer:
    def __init__(self, config: dict, weights: dict[str, Tensor], *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, max_batch_size: int = 32, kv_cache_bytes: int | None = None):
        """kv_cache_bytes: the most the KV slots may hold at once (None: as much as the batches need)."""
        weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
        self.shape = Qwen3Shape.from_config(config)
        self.backbone = Qwen3(self.shape, weights)
        # Qwen3Guard-Gen 0.6B and 4B tie the output projection to the embedding; 8B has its own.
        self.lm_head = self.backbone.embed if config.get("tie_word_embeddings") else weights["lm_head.weight"]
        self.max_slots = max_batch_size + 2
        self.token_bytes = self.shape.kv_token_bytes(dtype)
        self.kv_tokens = None if kv_cache_bytes is None else kv_cache_bytes // self.token_bytes
        if not self.rows_within(MIN_CAPACITY):
            raise ValueError(f"a KV budget of {kv_cache_bytes >> 20} MiB holds less than one request of {MIN_CAPACITY} "
                             f"tokens ({MIN_CAPACITY * self.token_bytes >> 20} MiB); give the Gen actors more")
        self.pool = KVPool(self.shape, dtype, device, slots=self.rows_within(MIN_CAPACITY), capacity=MIN_CAPACITY)
        self.device = device
        self._prefix_cache: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}
        self.batches = self.decode_forwards = 0  # batches scored, forwards after their labels' (`bench gen` reads them)

    def rows_within(self, span: int) -> int:
        """How many requests of up to `span` tokens (prefix and answer included) a batch may hold
        within the KV budget (0: not even one)."""
        if self.kv_tokens is None:
            return self.max_slots
        return min(self.max_slots, self.kv_tokens // capacity_for(span))

    def max_span(self) -> float:
        """The most tokens one request may take (prefix and answer included) within the budget."""
        if self.kv_tokens is None:
            return float("inf")
        return MIN_CAPACITY << (self.kv_tokens // MIN_CAPACITY).bit_length() - 1

    def _fit(self, rows: int, span: int) -> None:
        """Under a budget, the pool is reshaped to hold `rows` slots of `span` tokens, never more
        than the budget; without one it grows as batches need (KVPool.alloc and .batch)."""
        if self.kv_tokens is None:
            return
        if rows > self.rows_within(span):
            raise KVFull(f"{rows} requests of up to {span} tokens need {rows * capacity_for(span) * self.token_bytes >> 20} "
                         f"MiB of KV cache; the budget is {self.kv_tokens * self.token_bytes >> 20} MiB")
        if self.pool.capacity < span or self.pool.k.shape[1] < rows:
            capacity = capacity_for(span)
            self.pool.reshape(self.rows_within(capacity), capacity)

    def _prefix_kv(self, prefix: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The prefix's K and V, [layers, kv_heads, len, head_dim] each, computed once."""
        if prefix not in self._prefix_cache:
            self._fit(1, len(prefix))
            slot = self.pool.alloc()
            try:
                self._forward([list(prefix)], torch.zeros(1, dtype=torch.long, device=self.device), [slot])
                self._prefix_cache[prefix] = (self.pool.k[:, slot, :, : len(prefix)].clone(),
                                           self.pool.v[:, slot, :, : len(prefix)].clone())
            finally:
                self.pool.release(slot)
        return self._prefix_cache[prefix]

    def _forward(self, rows: list[list[int]], starts: Tensor, slots: list[int]) -> Tensor:
        """Each row's last real hidden state, [B, hidden]."""
        width = max(map(len, rows))
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        hidden = self.backbone.forward(torch.tensor([r + [0] * (width - len(r)) for r in rows], device=self.device),
                                       starts, lengths, slots, self.pool)
        return hidden[torch.arange(len(rows), device=self.device), lengths - 1]

    @torch.inference_mode()
    def score(self, prefix: list[int], rows: list[list[int]], label_ids: list[int], stop_ids: set[int],
              max_new_tokens: int, draft: Callable[[list[int]], list[int]] | None = None) -> list[Scored]:
        """rows: each request's ids after `prefix`, ending with the forced prefix's tokens. draft:
        a guess of the rest of an answer from its tokens so far (`gen_drafts.AnswerDrafts.draft`);
        each step checks every row's guess in one forward and keeps the part greedy decoding
        would have produced, plus greedy's next token, so the answer is greedy's whatever the guess
        (None: no guesses, one token a step)."""
        keys, values = self._prefix_kv(tuple(prefix)) if prefix else (None, None)
        self._fit(len(rows), len(prefix) + max(map(len, rows)) + max_new_tokens)
        self.batches += 1
        # a fresh pool hands out 0, 1, 2, ... and gets them back in reverse order, so a batch's slots
        # are consecutive and attention reads their KV in place
        slots = [self.pool.alloc() for _ in rows]
        try:
            if prefix:
                into = torch.tensor(slots, device=self.device)
                self.pool.k[:, into, :, : len(prefix)] = keys[:, None]
                self.pool.v[:, into, :, : len(prefix)] = values[:, None]
            starts = torch.full((len(rows),), len(prefix), device=self.device)
            logits = (self._forward(rows, starts, slots) @ self.lm_head.T).float()
            positions = (starts + torch.tensor([len(r) for r in rows], device=self.device)).tolist()  # of each next token
            label_probabilities = torch.softmax(logits[:, label_ids], -1).tolist()
            answers: list[list[int]] = [[] for _ in rows]
            pending = logits.argmax(-1).tolist()  # each row's next answer token, not yet in its KV
            done = [_took(answers[row], token, stop_ids, max_new_tokens) for row, token in enumerate(pending)]
            while not all(done):
                # a finished row rides along on its last token (its KV stays in its own slot), so the batch stays in place
                feeds = [[pending[row]] + ([] if done[row] or draft is None else
                                           draft(answers[row])[: max_new_tokens - len(answers[row])])
                         for row in range(len(rows))]
                width = max(map(len, feeds))
                hidden = self.backbone.forward(torch.tensor([f + [0] * (width - len(f)) for f in feeds], device=self.device),
                                               torch.tensor(positions, device=self.device),
                                               torch.tensor([len(f) for f in feeds], device=self.device), slots, self.pool)
                greedy = (hidden @ self.lm_head.T).argmax(-1).tolist()  # [B, width]: greedy's token after each fed one
                self.decode_forwards += 1
                for row, feed in enumerate(feeds):
                    if done[row]:
                        continue
                    kept = 0  # the guessed tokens greedy agrees with
                    while kept < len(feed) - 1 and feed[kept + 1] == greedy[row][kept]:
                        kept += 1
                    for token in feed[1: kept + 1] + [greedy[row][kept]]:
                        done[row] = _took(answers[row], token, stop_ids, max_new_tokens)
                        if done[row]:
                            break
                    positions[row] += kept + 1
                    pending[row] = greedy[row][kept]
        finally:
            for slot in reversed(slots):
                self.pool.release(slot)
        return [Scored(p, a) for p, a in zip(label_probabilities, answers)]


def _took(answer: list[int], token: int, stop_ids: set[int], max_new_tokens: int) -> bool:
    """`token` added to `answer` unless it ends it; whether the answer is now done."""
    if token in stop_ids:
        return True
    answer.append(token)
    return len(answer) >= max_new_tokens

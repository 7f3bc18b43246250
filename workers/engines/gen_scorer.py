"""Qwen3Guard-Gen label scoring on the plain-PyTorch Qwen3 (`workers/qwen3.py`), no framework.

Each request is its token ids after a shared prefix (the policy text of the chat template). The
prefix's KV is computed once and copied into each request's KV slot, so a request prefills only
its own tokens. One padded forward over the batch gives every row's next-token logits after the
forced `Safety:`; then the few answer tokens are decoded greedily, one batched step per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from guardstream.workers.engines.qwen3 import KVPool, Qwen3, Qwen3Shape


@dataclass(frozen=True)
class Scored:
    label_probabilities: list[float]  # softmax over the label tokens, in the order given
    answer_ids: list[int]  # greedy tokens after the forced prefix, stop token excluded


class GenScorer:
    def __init__(self, config: dict, weights: dict[str, Tensor], *, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, max_batch_size: int = 32):
        weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
        self.shape = Qwen3Shape.from_config(config)
        self.backbone = Qwen3(self.shape, weights)
        # Qwen3Guard-Gen 0.6B and 4B tie the output projection to the embedding; 8B has its own.
        self.lm_head = self.backbone.embed if config.get("tie_word_embeddings") else weights["lm_head.weight"]
        self.pool = KVPool(self.shape, dtype, device, slots=max_batch_size + 2, capacity=512)
        self.device = device
        self._prefix_cache: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {}

    def _prefix_kv(self, prefix: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """The prefix's K and V, [layers, kv_heads, len, head_dim] each, computed once."""
        if prefix not in self._prefix_cache:
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
              max_new_tokens: int) -> list[Scored]:
        """rows: each request's ids after `prefix`, ending with the forced prefix's tokens."""
        # a fresh pool hands out 0, 1, 2, ... and gets them back in reverse order, so a batch's slots
        # are consecutive and attention reads their KV in place
        slots = [self.pool.alloc() for _ in rows]
        try:
            if prefix:
                keys, values = self._prefix_kv(tuple(prefix))
                into = torch.tensor(slots, device=self.device)
                self.pool.k[:, into, :, : len(prefix)] = keys[:, None]
                self.pool.v[:, into, :, : len(prefix)] = values[:, None]
            starts = torch.full((len(rows),), len(prefix), device=self.device)
            logits = (self._forward(rows, starts, slots) @ self.lm_head.T).float()
            positions = starts + torch.tensor([len(r) for r in rows], device=self.device)  # of each next token
            label_probabilities = torch.softmax(logits[:, label_ids], -1).tolist()
            answers: list[list[int]] = [[] for _ in rows]
            done = [False] * len(rows)
            next_ids = logits.argmax(-1)
            for step in range(max_new_tokens):
                for row, token in enumerate(next_ids.tolist()):
                    done[row] = done[row] or token in stop_ids
                    if not done[row]:
                        answers[row].append(token)
                if all(done) or step == max_new_tokens - 1:
                    break
                # finished rows ride along (their KV stays in their own slots) so the batch stays in place
                hidden = self._forward(next_ids[:, None].tolist(), positions, slots)
                positions += 1
                next_ids = (hidden @ self.lm_head.T).argmax(-1)
        finally:
            for slot in reversed(slots):
                self.pool.release(slot)
        return [Scored(p, a) for p, a in zip(label_probabilities, answers)]

"""A Qwen3 transformer in plain PyTorch with an explicit, slot-based KV cache.

Written for many concurrent sessions that each add a few tokens at a time (Qwen3Guard-Stream):

- `KVPool` holds K and V as `[layers, slots, kv_heads, capacity, head_dim]`: one slot per row of a
  bounded batch (Gen's requests), read in place when the slots are consecutive. Slots and
  capacity double when they run out (one copy, amortised).
- `PagedKV` holds them in blocks of `block_size` positions, `[layers, blocks, kv_heads, block_size,
  head_dim]`; a sequence owns the blocks its block table lists, so memory follows the tokens held
  rather than the longest sequence times the number of sequences, under a fixed byte budget
  (Stream's many long-lived sessions).
- `Qwen3.forward` takes a padded batch of new tokens, one row per sequence, with each row's start
  position. Each row's new K and V are written at their positions, so nothing is re-processed;
  each query attends to its own row's keys up to its own position, and padded rows and columns
  are masked. So sequences of any lengths share one forward, and a sequence's result does not
  depend on who else is in the batch.

Weights load by the checkpoint's own names (`model.layers.N.self_attn.q_proj.weight`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from guardstream.workers.engines.checkpoint_files import checkpoint_config, checkpoint_dir


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """config.json and the safetensors weights of a local checkpoint directory or a hub id."""
    path = checkpoint_dir(path)
    weights: dict[str, Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    if not weights:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    return checkpoint_config(path), weights


@dataclass(frozen=True)
class Qwen3Shape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float

    def kv_token_bytes(self, dtype: torch.dtype) -> int:
        """KV cache bytes of one token: its K and V in every layer."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype.itemsize

    @classmethod
    def from_config(cls, c: dict) -> Qwen3Shape:
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope type {rope['rope_type']!r} is not supported; Qwen3Guard uses the default RoPE")
        if c.get("attention_bias"):
            raise ValueError("attention_bias=true is not a Qwen3 checkpoint")
        return cls(c["vocab_size"], c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                   c["num_attention_heads"], c["num_key_value_heads"],
                   c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], c["rms_norm_eps"],
                   rope.get("rope_theta") or c.get("rope_theta") or 10_000.0)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


def rope_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles, [B, 1, T, d], computed once per forward for every layer."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    angles = positions.float()[:, None, :, None] * inv_freq
    angles = torch.cat([angles, angles], -1)
    return angles.cos(), angles.sin()


def rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding, half-split layout as in Qwen3. x: [B, heads, T, d]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return (x.float() * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class KVFull(RuntimeError):
    pass


@dataclass
class _Rows:
    """Where a forward's new tokens go: (row, column) of every real token and its position."""

    positions: Tensor  # [B, K]
    rows: Tensor
    cols: Tensor
    span: int  # keys each row may read: the longest row's length after this step


class KVPool:
    def __init__(self, shape: Qwen3Shape, dtype: torch.dtype, device: torch.device | str, slots: int = 8,
                 capacity: int = 256):
        self.shape, self.dtype, self.device = shape, dtype, device
        self.k, self.v = self._zeros(slots, capacity), self._zeros(slots, capacity)
        self.free = list(range(slots - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def _zeros(self, slots: int, capacity: int) -> Tensor:
        """Storage for K or V: [layers, slots, kv_heads, capacity, head_dim]."""
        return torch.zeros(self.shape.num_layers, slots, self.shape.num_kv_heads, capacity, self.shape.head_dim,
                           dtype=self.dtype, device=self.device)

    def reshape(self, slots: int, capacity: int) -> None:
        """New storage of `slots` × `capacity` tokens (contents dropped); only while no slot is held."""
        if len(self.free) != self.k.shape[1]:
            raise RuntimeError("a KV pool is reshaped only while none of its slots is held")
        self.k = self.v = None  # the old storage goes before the new one is made
        self.k, self.v = self._zeros(slots, capacity), self._zeros(slots, capacity)
        self.free = list(range(slots - 1, -1, -1))

    def alloc(self) -> int:
        if not self.free:
            grown = self.k.shape[1]
            self._resize(slots=2 * grown, capacity=self.capacity)
            self.free = list(range(2 * grown - 1, grown - 1, -1))
        return self.free.pop()

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def batch(self, slots: list[int], where: _Rows) -> _SlotBatch:
        if where.span > self.capacity:
            capacity = self.capacity
            while capacity < where.span:
                capacity *= 2
            self._resize(slots=self.k.shape[1], capacity=capacity)
        return _SlotBatch(self, torch.tensor(slots, device=self.device), where)

    def _resize(self, slots: int, capacity: int) -> None:
        old_slots, old_capacity = self.k.shape[1], self.capacity
        for name in ("k", "v"):
            grown = self._zeros(slots, capacity)
            grown[:, :old_slots, :, :old_capacity] = getattr(self, name)
            setattr(self, name, grown)


class _SlotBatch:
    def __init__(self, pool: KVPool, slots: Tensor, where: _Rows):
        self.pool, self.slots, self.where = pool, slots, where
        first = int(slots[0])
        consecutive = bool((slots == torch.arange(first, first + len(slots), device=slots.device)).all())
        self.first = first if consecutive else None

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new K and V ([B, kv_heads, K, d]); return each row's first `span` of them: a
        view when the slots are consecutive, else a gathered copy."""
        w, pool = self.where, self.pool
        at = (self.slots[w.rows], slice(None), w.positions[w.rows, w.cols])
        pool.k[layer][at], pool.v[layer][at] = k[w.rows, :, w.cols], v[w.rows, :, w.cols]
        if self.first is not None:
            picked = slice(self.first, self.first + len(self.slots))
            return pool.k[layer, picked, :, : w.span], pool.v[layer, picked, :, : w.span]
        return (pool.k[layer, :, :, : w.span].index_select(0, self.slots),
                pool.v[layer, :, :, : w.span].index_select(0, self.slots))


class PagedKV:
    def __init__(self, shape: Qwen3Shape, dtype: torch.dtype, device: torch.device | str, max_bytes: int,
                 block_size: int = 16, blocks: int = 64):
        self.shape, self.dtype, self.device, self.block_size = shape, dtype, device, block_size
        self.max_blocks = max(1, max_bytes // self.block_bytes())
        blocks = min(blocks, self.max_blocks)
        self.k = torch.zeros(shape.num_layers, blocks, shape.num_kv_heads, block_size, shape.head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.free = list(range(blocks - 1, -1, -1))
        self.tables: dict[int, list[int]] = {}  # sequence → its blocks, in position order
        self._next = 0

    def block_bytes(self) -> int:
        s = self.shape
        return 2 * s.num_layers * s.num_kv_heads * self.block_size * s.head_dim * torch.tensor([], dtype=self.dtype).element_size()

    def alloc(self) -> int:
        self._next += 1
        self.tables[self._next] = []
        return self._next

    def release(self, seq: int) -> None:
        self.free += self.tables.pop(seq, [])

    def missing_blocks(self, seq: int, length: int) -> int:
        return max(0, -(-length // self.block_size) - len(self.tables[seq]))

    def spare_blocks(self) -> int:
        return len(self.free) + self.max_blocks - self.k.shape[1]

    def reserve(self, seq: int, length: int) -> None:
        """Give `seq` the blocks to hold `length` positions; grows the storage up to the budget."""
        missing = self.missing_blocks(seq, length)
        if missing > self.spare_blocks():
            raise KVFull(f"KV cache full: {missing} more blocks needed, {self.spare_blocks()} left of "
                         f"{self.max_blocks} (stream_kv_cache_mb)")
        if missing > len(self.free):
            self._grow(missing - len(self.free))
        self.tables[seq] += [self.free.pop() for _ in range(missing)]

    def used_bytes(self) -> int:
        return sum(map(len, self.tables.values())) * self.block_bytes()

    def reserved_bytes(self) -> int:
        return self.k.shape[1] * self.block_bytes()

    def batch(self, seqs: list[int], where: _Rows) -> _PagedBatch:
        width = -(-where.span // self.block_size)
        tables = [self.tables[s][:width] for s in seqs]
        return _PagedBatch(self, torch.tensor([t + [0] * (width - len(t)) for t in tables], device=self.device), where)

    def _grow(self, at_least: int) -> None:
        old = self.k.shape[1]
        blocks = min(self.max_blocks, max(2 * old, old + at_least))
        for name in ("k", "v"):
            grown = torch.zeros(self.shape.num_layers, blocks, self.shape.num_kv_heads, self.block_size, self.shape.head_dim,
                                dtype=self.dtype, device=self.device)
            grown[:, :old] = getattr(self, name)
            setattr(self, name, grown)
        self.free = list(range(blocks - 1, old - 1, -1)) + self.free


class _PagedBatch:
    def __init__(self, pool: PagedKV, tables: Tensor, where: _Rows):
        self.pool, self.tables, self.where = pool, tables, where
        positions = where.positions[where.rows, where.cols]
        self.blocks = tables[where.rows, positions // pool.block_size]
        self.offsets = positions % pool.block_size

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new K and V ([B, kv_heads, K, d]) in their blocks; return each row's first
        `span` of them, gathered from its block table (table padding lies past the row's length,
        where the mask hides it)."""
        w, pool = self.where, self.pool
        at = (self.blocks, slice(None), self.offsets)
        pool.k[layer][at], pool.v[layer][at] = k[w.rows, :, w.cols], v[w.rows, :, w.cols]
        batch, width = self.tables.shape
        s = pool.shape

        def gathered(store: Tensor) -> Tensor:
            rows = store[layer][self.tables]  # [B, width, kv_heads, block, d]
            return rows.transpose(1, 2).reshape(batch, s.num_kv_heads, width * pool.block_size, s.head_dim)[:, :, : w.span]

        return gathered(pool.k), gathered(pool.v)


class Qwen3:
    """The backbone: token ids in, final hidden states out."""

    def __init__(self, shape: Qwen3Shape, weights: dict[str, Tensor], prefix: str = "model."):
        self.shape = shape
        self.embed = weights[f"{prefix}embed_tokens.weight"]
        self.norm = weights[f"{prefix}norm.weight"]
        self.layers = [self._layer(weights, f"{prefix}layers.{i}.") for i in range(shape.num_layers)]

    @staticmethod
    def _layer(weights: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
        """One layer's weights; q/k/v and gate/up are concatenated so each is one matmul."""
        w = lambda name: weights[f"{prefix}{name}.weight"]  # noqa: E731
        return {"input_layernorm": w("input_layernorm"), "post_attention_layernorm": w("post_attention_layernorm"),
                "qkv": torch.cat([w("self_attn.q_proj"), w("self_attn.k_proj"), w("self_attn.v_proj")]),
                "q_norm": w("self_attn.q_norm"), "k_norm": w("self_attn.k_norm"), "o_proj": w("self_attn.o_proj"),
                "gate_up": torch.cat([w("mlp.gate_proj"), w("mlp.up_proj")]), "down": w("mlp.down_proj")}

    @torch.inference_mode()
    def forward(self, tokens: Tensor, starts: Tensor, lengths: Tensor, rows: list[int], cache: KVPool | PagedKV) -> Tensor:
        """tokens: [B, K] padded new tokens; starts: [B] tokens already cached; lengths: [B] real new tokens;
        rows: each row's slot or sequence in `cache`. Returns hidden states [B, K, hidden] (rows past a
        length are padding)."""
        s = self.shape
        batch, width = tokens.shape
        positions = starts[:, None] + torch.arange(width, device=tokens.device)  # [B, K]
        valid = torch.arange(width, device=tokens.device)[None, :] < lengths[:, None]  # [B, K]
        span = int((starts + lengths).max())
        kv = cache.batch(rows, _Rows(positions, *valid.nonzero(as_tuple=True), span))
        # query j of row b sees keys t <= its own position; padded queries see key 0 and are ignored
        visible = torch.arange(span, device=tokens.device)[None, None, :] <= positions[:, :, None]
        mask = torch.zeros(visible.shape, dtype=cache.dtype, device=tokens.device).masked_fill_(~visible, float("-inf"))
        mask = mask[:, None]  # [B, 1, K, span], additive, built once for every layer
        cos, sin = rope_tables(positions, s.head_dim, s.rope_theta)
        q_width, kv_width = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        x = F.embedding(tokens, self.embed)
        for i, w in enumerate(self.layers):
            h = rms_norm(x, w["input_layernorm"], s.rms_norm_eps)
            q, k, v = (h @ w["qkv"].T).split([q_width, kv_width, kv_width], -1)
            q = rope(rms_norm(q.view(batch, width, s.num_heads, s.head_dim), w["q_norm"], s.rms_norm_eps).transpose(1, 2), cos, sin)
            k = rope(rms_norm(k.view(batch, width, s.num_kv_heads, s.head_dim), w["k_norm"], s.rms_norm_eps).transpose(1, 2), cos, sin)
            keys, values = kv.update(i, k, v.view(batch, width, s.num_kv_heads, s.head_dim).transpose(1, 2))
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            x = x + attn.transpose(1, 2).reshape(batch, width, -1) @ w["o_proj"].T
            gate, up = (rms_norm(x, w["post_attention_layernorm"], s.rms_norm_eps) @ w["gate_up"].T).chunk(2, -1)
            x = x + (F.silu(gate) * up) @ w["down"].T
        return rms_norm(x, self.norm, s.rms_norm_eps)

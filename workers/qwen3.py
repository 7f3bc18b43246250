"""A Qwen3 transformer in plain PyTorch with an explicit, slot-based KV cache.

Written for many concurrent sessions that each add a few tokens at a time (Qwen3Guard-Stream):

- `KVPool` holds K and V as `[layers, slots, kv_heads, capacity, head_dim]`. A session owns one
  slot; its tokens are written in place at their positions, so nothing is re-processed. Slots and
  capacity double when they run out (one copy, amortised).
- `Qwen3.forward` takes a padded batch of new tokens, one row per session, with each row's start
  position. Each query attends to the keys of its own slot up to its own position; padded rows
  and columns are masked. So sessions of any lengths share one forward, and a session's result
  does not depend on who else is in the batch.

Weights load by the checkpoint's own names (`model.layers.N.self_attn.q_proj.weight`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


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


def rope(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """Rotary embedding, half-split layout as in Qwen3. x: [B, heads, T, d], positions: [B, T]."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    angles = positions.float()[:, None, :, None] * inv_freq  # [B, 1, T, d/2]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated * sin).to(x.dtype)


class KVPool:
    def __init__(self, shape: Qwen3Shape, dtype: torch.dtype, device: torch.device | str, slots: int = 8,
                 capacity: int = 256):
        self.shape, self.dtype, self.device = shape, dtype, device
        self.k = torch.zeros(shape.num_layers, slots, shape.num_kv_heads, capacity, shape.head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.free = list(range(slots - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def bytes_per_token(self) -> int:
        s = self.shape
        return 2 * s.num_layers * s.num_kv_heads * s.head_dim * self.k.element_size()

    def alloc(self) -> int:
        if not self.free:
            grown = self.k.shape[1]
            self._resize(slots=2 * grown, capacity=self.capacity)
            self.free = list(range(2 * grown - 1, grown - 1, -1))
        return self.free.pop()

    def release(self, slot: int) -> None:
        self.free.append(slot)

    def reserve(self, length: int) -> None:
        if length > self.capacity:
            capacity = self.capacity
            while capacity < length:
                capacity *= 2
            self._resize(slots=self.k.shape[1], capacity=capacity)

    def _resize(self, slots: int, capacity: int) -> None:
        old_slots, old_capacity = self.k.shape[1], self.capacity
        for name in ("k", "v"):
            grown = torch.zeros(self.shape.num_layers, slots, self.shape.num_kv_heads, capacity, self.shape.head_dim,
                                dtype=self.dtype, device=self.device)
            grown[:, :old_slots, :, :old_capacity] = getattr(self, name)
            setattr(self, name, grown)


class Qwen3:
    """The backbone: token ids in, final hidden states out."""

    def __init__(self, shape: Qwen3Shape, weights: dict[str, Tensor], prefix: str = "model."):
        self.shape = shape
        self.embed = weights[f"{prefix}embed_tokens.weight"]
        self.norm = weights[f"{prefix}norm.weight"]
        names = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "self_attn.q_norm", "self_attn.k_norm", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                 "mlp.down_proj")
        self.layers = [{n: weights[f"{prefix}layers.{i}.{n}.weight"] for n in names} for i in range(shape.num_layers)]

    @torch.inference_mode()
    def forward(self, tokens: Tensor, starts: Tensor, lengths: Tensor, slots: Tensor, pool: KVPool) -> Tensor:
        """tokens: [B, K] padded new tokens; starts: [B] tokens already cached; lengths: [B] real new tokens;
        slots: [B] KV slots. Returns hidden states [B, K, hidden] (rows past a length are padding)."""
        s = self.shape
        batch, width = tokens.shape
        positions = starts[:, None] + torch.arange(width, device=tokens.device)  # [B, K]
        valid = torch.arange(width, device=tokens.device)[None, :] < lengths[:, None]  # [B, K]
        rows, cols = valid.nonzero(as_tuple=True)
        span = int((starts + lengths).max())
        pool.reserve(span)
        # query j of row b sees keys t <= its own position; padded queries see key 0 and are ignored
        mask = torch.arange(span, device=tokens.device)[None, None, :] <= positions[:, :, None]
        mask = mask[:, None]  # [B, 1, K, span]
        x = F.embedding(tokens, self.embed)
        for i, w in enumerate(self.layers):
            h = rms_norm(x, w["input_layernorm"], s.rms_norm_eps)
            q = (h @ w["self_attn.q_proj"].T).view(batch, width, s.num_heads, s.head_dim)
            k = (h @ w["self_attn.k_proj"].T).view(batch, width, s.num_kv_heads, s.head_dim)
            v = (h @ w["self_attn.v_proj"].T).view(batch, width, s.num_kv_heads, s.head_dim)
            q = rope(rms_norm(q, w["self_attn.q_norm"], s.rms_norm_eps).transpose(1, 2), positions, s.rope_theta)
            k = rope(rms_norm(k, w["self_attn.k_norm"], s.rms_norm_eps).transpose(1, 2), positions, s.rope_theta)
            pool.k[i, slots[rows], :, positions[rows, cols]] = k[rows, :, cols]
            pool.v[i, slots[rows], :, positions[rows, cols]] = v.transpose(1, 2)[rows, :, cols]
            keys = pool.k[i, :, :, :span].index_select(0, slots)
            values = pool.v[i, :, :, :span].index_select(0, slots)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
            x = x + attn.transpose(1, 2).reshape(batch, width, -1) @ w["self_attn.o_proj"].T
            h = rms_norm(x, w["post_attention_layernorm"], s.rms_norm_eps)
            x = x + (F.silu(h @ w["mlp.gate_proj"].T) * (h @ w["mlp.up_proj"].T)) @ w["mlp.down_proj"].T
        return rms_norm(x, self.norm, s.rms_norm_eps)

"""Qwen3Guard-Stream sessions: many concurrent streams, each chunk judged in one shared forward.

`step()` takes the pending chunks of many sessions (an `Open` with the templated prompt, or a
`Feed` with reply tokens), runs them as one padded batch through the cached backbone
(`workers/engines/qwen3.py`), and reads the query heads at the user turn's `<|im_end|>` or the
response heads at every new reply token. Causal attention and position-wise heads make this
give the same verdicts as re-processing the whole sequence, at the cost of the new tokens only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from guardstream.workers.engines.qwen3 import PagedKV, Qwen3, Qwen3Shape, load_checkpoint, rms_norm, special_token_id
from guardstream.workers.engines.labels import StreamLabels


class SessionLimit(RuntimeError):
    pass


class UnknownSession(KeyError):
    pass


@dataclass(frozen=True)
class Open:
    session: str
    prompt_ids: list[int]  # the templated user turn and assistant header


@dataclass(frozen=True)
class Feed:
    session: str
    token_ids: list[int]


@dataclass(frozen=True)
class TokenVerdict:
    label: str
    probabilities: dict[str, float]
    category: str
    category_probability: float


@dataclass(frozen=True)
class StreamAnswer:
    """What a session's step answers; the one answer type from the engine through the actor to the
    worker. The actor sets `missing` and `error`, which the engine never does."""

    session: str
    query: TokenVerdict | None = None  # for an Open
    tokens: list[TokenVerdict] = field(default_factory=list)  # for a Feed, one per new token
    missing: bool = False  # the actor holds no such session (restarted, evicted) or is out of step: rebuild it
    error: str | None = None  # the engine failed on this session alone; it was closed, to be rebuilt


@dataclass
class _Session:
    seq: int  # in the KV cache
    length: int
    last_used: float
    prompt_length: int = 0  # tokens of the Open, so `length - prompt_length` reply tokens were fed


class _Heads:
    """One head pair: pre-projection, RMSNorm, risk and category classifiers (all bias-free)."""

    def __init__(self, weights: dict[str, Tensor], prefix: str, eps: float, risk: list[str], category: list[str]):
        self.pre = weights[f"{prefix}risk_level_category_pre.weight"]
        self.norm = weights[f"{prefix}risk_level_category_layernorm.weight"]
        self.risk = weights[f"{prefix}risk_level_head.weight"]
        self.category = weights[f"{prefix}category_head.weight"]
        self.eps, self.risk_names, self.category_names = eps, risk, category

    def __call__(self, h: Tensor) -> list[TokenVerdict]:
        x = rms_norm(h @ self.pre.T, self.norm, self.eps)
        risk = torch.softmax((x @ self.risk.T).float(), -1)
        category = torch.softmax((x @ self.category.T).float(), -1)
        best_risk, best_category = risk.argmax(-1).tolist(), category.max(-1)
        return [TokenVerdict(self.risk_names[r], dict(zip(self.risk_names, probs)), self.category_names[c], p)
                for r, probs, c, p in zip(best_risk, risk.tolist(), best_category.indices.tolist(), best_category.values.tolist())]


class StreamEngine:
    def __init__(self, config: dict, weights: dict[str, Tensor], *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 im_end_id: int, max_sessions: int = 1024, idle_ttl_s: float = 300, kv_cache_bytes: int = 4 << 30):
        weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
        self.shape = Qwen3Shape.from_config(config)
        self.backbone = Qwen3(self.shape, weights)
        labels = StreamLabels.from_config(config)
        eps = self.shape.rms_norm_eps
        self.response_heads = _Heads(weights, "", eps, labels.response_risk, labels.response_category)
        self.query_heads = _Heads(weights, "query_", eps, labels.query_risk, labels.query_category)
        self.pool = PagedKV(self.shape, dtype, device, max_bytes=kv_cache_bytes)
        self.device, self.im_end_id = device, im_end_id
        self.max_positions = config["max_position_embeddings"]
        self.max_sessions, self.idle_ttl_s = max_sessions, idle_ttl_s
        self.sessions: dict[str, _Session] = {}
        self.evicted = 0  # sessions closed to make room in the KV cache

    @classmethod
    def from_pretrained(cls, path: str | Path, **kw) -> StreamEngine:
        config, weights = load_checkpoint(path)
        return cls(config, weights, im_end_id=special_token_id(path, "<|im_end|>"), **kw)

    # -- sessions -------------------------------------------------------------------------
    def open(self, session: str, prompt_ids: list[int]) -> TokenVerdict:
        return self.step([Open(session, prompt_ids)])[0].query

    def feed(self, session: str, token_ids: list[int]) -> list[TokenVerdict]:
        return self.step([Feed(session, token_ids)])[0].tokens

    def close(self, session: str) -> None:
        state = self.sessions.pop(session, None)
        if state is not None:
            self.pool.release(state.seq)

    def evict_idle(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        idle = [s for s, state in self.sessions.items() if now - state.last_used > self.idle_ttl_s]
        for session in idle:
            self.close(session)
        return idle

    def memory(self) -> dict:
        """KV bytes the sessions' blocks hold (used), the cache holds (reserved) and may hold (budget)."""
        return {"used_bytes": self.pool.used_bytes(), "reserved_bytes": self.pool.reserved_bytes(),
                "budget_bytes": self.pool.max_blocks * self.pool.block_bytes(), "sessions": len(self.sessions)}

    def _begin(self, chunk: Open | Feed, now: float) -> _Session:
        if isinstance(chunk, Feed):
            state = self.sessions.get(chunk.session)
            if state is None:
                raise UnknownSession(f"session {chunk.session!r} is not open (closed, evicted, or never opened)")
            return state
        if chunk.session in self.sessions:
            self.close(chunk.session)  # re-opening rebuilds the session from scratch
        if self.im_end_id not in chunk.prompt_ids:
            raise ValueError(f"prompt of {chunk.session!r} has no <|im_end|> closing the user turn")
        if len(self.sessions) >= self.max_sessions and not self.evict_idle(now):
            raise SessionLimit(f"{self.max_sessions} sessions open; close some or raise max_sessions")
        if len(chunk.prompt_ids) > self.max_positions:
            raise ValueError(f"prompt of {chunk.session!r} is {len(chunk.prompt_ids)} tokens; the model has {self.max_positions} positions")
        state = _Session(self.pool.alloc(), 0, now, len(chunk.prompt_ids))
        self.sessions[chunk.session] = state
        return state

    def _make_room(self, chunks: list[Open | Feed], states: list[_Session], ids: list[list[int]], now: float) -> None:
        """Reserve KV blocks for this step. When the budget is spent, the least recently used
        sessions outside the step are evicted first (their next chunk rebuilds them); a step that
        still does not fit raises `KVFull`, and the actor retries its sessions one at a time."""
        needed = sum(self.pool.missing_blocks(st.seq, st.length + len(i)) for st, i in zip(states, ids))
        if needed > self.pool.spare_blocks():  # only then: ordering every session is not for each step
            stepping = {c.session for c in chunks}
            idle = sorted((st.last_used, name) for name, st in self.sessions.items() if name not in stepping)
            while needed > self.pool.spare_blocks() and idle:
                self.close(idle.pop(0)[1])
                self.evicted += 1
        for state, chunk_ids in zip(states, ids):
            self.pool.reserve(state.seq, state.length + len(chunk_ids))

    # -- the batched step -------------------------------------------------------------------
    def step(self, chunks: list[Open | Feed]) -> list[StreamAnswer]:
        if not chunks:
            return []
        if len({c.session for c in chunks}) != len(chunks):
            raise ValueError("one chunk per session per step; queue the rest for the next step")
        now = time.monotonic()
        states = [self._begin(c, now) for c in chunks]
        ids = [c.prompt_ids if isinstance(c, Open) else c.token_ids for c in chunks]
        for chunk, state, chunk_ids in zip(chunks, states, ids):
            if state.length + len(chunk_ids) > self.max_positions:
                raise ValueError(f"session {chunk.session!r} would pass the model's {self.max_positions} positions")
        self._make_room(chunks, states, ids, now)
        width = max(len(i) for i in ids)
        tokens = torch.tensor([i + [0] * (width - len(i)) for i in ids], device=self.device)
        starts = torch.tensor([s.length for s in states], device=self.device)
        lengths = torch.tensor([len(i) for i in ids], device=self.device)
        hidden = self.backbone.forward(tokens, starts, lengths, [s.seq for s in states], self.pool)
        for state, chunk_ids in zip(states, ids):
            state.length += len(chunk_ids)
            state.last_used = now
        # each head pair runs once over all the rows that need it
        opens = [(row, len(i) - 1 - i[::-1].index(self.im_end_id)) for row, (c, i) in enumerate(zip(chunks, ids))
                 if isinstance(c, Open)]
        feeds = [(row, len(i)) for row, (c, i) in enumerate(zip(chunks, ids)) if isinstance(c, Feed)]
        queries = self.query_heads(hidden[[r for r, _ in opens], [p for _, p in opens]]) if opens else []
        replies = self.response_heads(torch.cat([hidden[r, :n] for r, n in feeds])) if feeds else []
        results: list[StreamAnswer] = [StreamAnswer(c.session) for c in chunks]
        for (row, _), verdict in zip(opens, queries):
            results[row] = StreamAnswer(chunks[row].session, query=verdict)
        offset = 0
        for row, n in feeds:
            results[row] = StreamAnswer(chunks[row].session, tokens=replies[offset : offset + n])
            offset += n
        return results

"""Qwen3Guard-Stream sessions: many concurrent streams, each chunk judged in one shared forward.

`run()` takes one `StreamCall` per session and answers each: a call that opens its session sends
the templated prompt and its first reply tokens through the same forward; the rest feed reply
tokens to sessions this engine holds. Every row of the padded batch runs through the cached
backbone (`workers/engines/qwen3.py`); the query heads are read at the user turn's
`<|im_end|>`, the response heads at every new reply token. Causal attention and position-wise
heads make this give the same verdicts as re-processing the whole sequence, at the cost of the
new tokens only. The engine keeps each session's length, so it alone decides whether a call is
in step, and rolls a failed batch back before running it again one session at a time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from guardstream.workers.engines.labels import StreamLabels
from guardstream.workers.engines.messages import StreamAnswer, StreamCall, TokenVerdict
from guardstream.workers.engines.narrowing import one_at_a_time
from guardstream.workers.engines.checkpoint_files import special_token_id
from guardstream.workers.engines.qwen3 import PagedKV, Qwen3, Qwen3Shape, load_checkpoint, rms_norm


class SessionLimit(RuntimeError):
    pass


class UnknownSession(KeyError):
    pass


class DeviceLost(RuntimeError):
    """A CUDA error: sticky on the device, so only a new process clears it."""


def _device_lost(exc: Exception) -> bool:
    """No session would fare better alone: the step is not narrowed down."""
    return isinstance(exc, DeviceLost)


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
        return self.step([StreamCall(session, [], prompt_ids=prompt_ids)])[0].query

    def feed(self, session: str, token_ids: list[int]) -> list[TokenVerdict]:
        return self.step([StreamCall(session, token_ids)])[0].tokens

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

    def in_step(self, call: StreamCall) -> bool:
        """Whether the session holds as many reply tokens as the caller's state says it judged."""
        state = self.sessions.get(call.session)
        return state is not None and state.length - state.prompt_length == call.judged

    # -- calls, with failures isolated ------------------------------------------------------
    def run(self, calls: list[StreamCall]) -> list[StreamAnswer]:
        """One batched step for every call. A session that is gone, or that holds another number of
        reply tokens than the caller's state says (a retried step it already fed, a step whose
        tokens it never got), is answered missing: the caller rebuilds it from its history instead
        of feeding it out of step. A batch that fails is rolled back and run again one session at
        a time, so only a failing session gets an error; that session is closed."""
        missing = {c.session for c in calls if c.prompt_ids is None and not self.in_step(c)}
        live = [c for c in calls if c.session not in missing]
        answered = {a.session: a for a in one_at_a_time(live, self._step_or_roll_back, self._failed, "the Stream engine",
                                                        raises=_device_lost)}
        for call in live:
            if call.close:
                self.close(call.session)
        self.evict_idle()
        return [answered.get(c.session) or StreamAnswer(c.session, missing=True) for c in calls]

    def _step_or_roll_back(self, calls: list[StreamCall]) -> list[StreamAnswer]:
        """A step that fails leaves the sessions as they were before it."""
        before = {c.session: self.sessions[c.session].length for c in calls if c.session in self.sessions}
        try:
            return self.step(calls)
        except Exception as exc:
            self._roll_back(calls, before)
            if "CUDA error" in str(exc):
                raise DeviceLost(str(exc)) from exc
            raise

    def _failed(self, call: StreamCall, exc: Exception) -> StreamAnswer:
        """The engine fails on this session alone: it is closed, and its next call rebuilds it."""
        self.close(call.session)
        return StreamAnswer(call.session, error=f"engine failed on this stream: {type(exc).__name__}: {str(exc)[:300]}")

    def _roll_back(self, calls: list[StreamCall], before: dict[str, int]) -> None:
        """Fed sessions return to their lengths before the failed step (KV past a length is never
        read); sessions the step opened or re-opened (a new slot) are closed: the retry opens them."""
        for call in calls:
            if call.prompt_ids is None and call.session in before and call.session in self.sessions:
                self.sessions[call.session].length = before[call.session]
            else:
                self.close(call.session)

    # -- the batched forward ------------------------------------------------------------------
    def _begin(self, call: StreamCall, now: float) -> _Session:
        if call.prompt_ids is None:
            state = self.sessions.get(call.session)
            if state is None:
                raise UnknownSession(f"session {call.session!r} is not open (closed, evicted, or never opened)")
            return state
        if call.session in self.sessions:
            self.close(call.session)  # re-opening rebuilds the session from scratch
        if self.im_end_id not in call.prompt_ids:
            raise ValueError(f"prompt of {call.session!r} has no <|im_end|> closing the user turn")
        if len(self.sessions) >= self.max_sessions and not self.evict_idle(now):
            raise SessionLimit(f"{self.max_sessions} sessions open; close some or raise max_sessions")
        if len(call.prompt_ids) > self.max_positions:
            raise ValueError(f"prompt of {call.session!r} is {len(call.prompt_ids)} tokens; the model has {self.max_positions} positions")
        state = _Session(self.pool.alloc(), 0, now, len(call.prompt_ids))
        self.sessions[call.session] = state
        return state

    def _make_room(self, calls: list[StreamCall], states: list[_Session], ids: list[list[int]]) -> None:
        """Reserve KV blocks for this step. When the budget is spent, the least recently used
        sessions outside the step are evicted first (their next chunk rebuilds them); a step that
        still does not fit raises `KVFull`, and `run` retries its sessions one at a time."""
        needed = sum(self.pool.missing_blocks(st.seq, st.length + len(i)) for st, i in zip(states, ids))
        if needed > self.pool.spare_blocks():  # only then: ordering every session is not for each step
            stepping = {c.session for c in calls}
            idle = sorted((st.last_used, name) for name, st in self.sessions.items() if name not in stepping)
            while needed > self.pool.spare_blocks() and idle:
                self.close(idle.pop(0)[1])
                self.evicted += 1
        for state, row in zip(states, ids):
            self.pool.reserve(state.seq, state.length + len(row))

    def step(self, calls: list[StreamCall]) -> list[StreamAnswer]:
        """One batched step: an opening call's row is its prompt, then its reply tokens, in one
        forward with the other openings; the others' rows in one forward of their own."""
        if not calls:
            return []
        if len({c.session for c in calls}) != len(calls):
            raise ValueError("one call per session per step; queue the rest for the next step")
        now = time.monotonic()
        states = [self._begin(c, now) for c in calls]
        rows = [(c.prompt_ids or []) + c.history_ids + c.new_ids for c in calls]
        for call, state, row in zip(calls, states, rows):
            if state.length + len(row) > self.max_positions:
                raise ValueError(f"session {call.session!r} would pass the model's {self.max_positions} positions")
        self._make_room(calls, states, rows)
        # opening rows (a prompt and its first tokens) and feeding rows (a chunk's few tokens) go
        # through separate forwards: padded together, every chunk would cost a prompt's width
        hidden: dict[int, Tensor] = {}
        for opening in (True, False):
            group = [i for i, (c, row) in enumerate(zip(calls, rows)) if row and (c.prompt_ids is not None) is opening]
            if group:
                hidden.update(zip(group, self._forward([states[i] for i in group], [rows[i] for i in group])))
        for state, row in zip(states, rows):
            state.length += len(row)
            state.last_used = now
        # each head pair runs once over all the rows that need it: the prompt's end, the reply tokens
        opens = [hidden[i][len(c.prompt_ids) - 1 - c.prompt_ids[::-1].index(self.im_end_id)]
                 for i, c in enumerate(calls) if c.prompt_ids is not None]
        replies = [hidden[i][len(c.prompt_ids or []):len(rows[i])] for i, c in enumerate(calls)
                   if len(rows[i]) > len(c.prompt_ids or [])]
        queries = iter(self.query_heads(torch.stack(opens)) if opens else [])
        tokens = self.response_heads(torch.cat(replies)) if replies else []
        answers, offset = [], 0
        for call, row in zip(calls, rows):
            query = next(queries) if call.prompt_ids is not None else None
            fed = len(row) - len(call.prompt_ids or [])
            judged, offset = tokens[offset: offset + fed], offset + fed
            answers.append(StreamAnswer(call.session, query=query, tokens=judged[len(call.history_ids):]))
        return answers

    def _forward(self, states: list[_Session], rows: list[list[int]]) -> Tensor:
        """The rows, padded to one width, through the backbone from each session's length on."""
        width = max(len(r) for r in rows)
        tokens = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=self.device)
        starts = torch.tensor([s.length for s in states], device=self.device)
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        return self.backbone.forward(tokens, starts, lengths, [s.seq for s in states], self.pool)

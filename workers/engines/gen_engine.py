"""Qwen3Guard-Gen on the transformers backend: the checkpoint's own chat template, the answer
block parsed, in one of two modes.

- `generate`: the model card's way, batched greedy `generate()` of the whole answer; the reference.
- `score` (default): the templated input plus the forced `Safety:` prefix in one forward, whose
  next-token distribution over the three label words gives label and probabilities; then the few
  tokens of `Categories:`/`Refusal:` are decoded greedily from the KV cache, several a forward
  from drafts of the answer's grammar (`gen_drafts.py`), with greedy decoding's result. The part
  of the template before the conversation (the policy text) is the same for every request of a
  kind: its KV is computed once per engine and reused, so each request only prefills its own
  conversation. This runs on the plain-PyTorch Qwen3 (`workers/gen_scorer.py`) with the
  checkpoint's own weights.
"""

from __future__ import annotations

import time

import torch

from guardstream.schemas import Moderate, RiskLevel
from guardstream.workers.engines.chat_tokenizer import ChatTokenizer
from guardstream.workers.engines.framing import render_ids
from guardstream.workers.engines.gen_drafts import AnswerDrafts
from guardstream.workers.engines.gen_output import GenJudgement
from guardstream.workers.engines.gen_scorer import GenScorer
from guardstream.schemas.labels import RISK_LABELS as LABELS
from guardstream.workers.engines.messages import GenRequest, GenResult
from guardstream.workers.engines.qwen3 import load_checkpoint

FORCED_PREFIX = "Safety:"


def label_token(tokenizer, label: str) -> int:
    """The first sub-token of a label word as the model writes it after `Safety:` (not hard-coded)."""
    forced = tokenizer(FORCED_PREFIX, add_special_tokens=False)["input_ids"]
    with_label = tokenizer(f"{FORCED_PREFIX} {label}", add_special_tokens=False)["input_ids"]
    if with_label[: len(forced)] != forced:
        raise RuntimeError(f"the tokenizer merges {FORCED_PREFIX!r} with the label {label!r}; cannot score labels")
    return with_label[len(forced)]


def input_ids(tokenizer, request: GenRequest) -> list[int]:
    """The request as the Gen model card renders it, `apply_chat_template(messages)` with the
    template's defaults: Qwen3Guard-Gen's template writes the assistant header itself, and a flag the
    card does not pass (add_generation_prompt) would add what the model never saw. Its messages'
    text is read as text, never as control tokens."""
    return render_ids(tokenizer, request.messages)


def load_checkpoint_error(model: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load Qwen3Guard checkpoint {model!r}: {exc}. Pass a local directory with "
        "config.json, tokenizer files and safetensors weights, or a hub id on a machine that can "
        "reach the hub (or has it in its HF cache)."
    )


# Two conversations whose ids differ from their first token on: what their renderings share is
# the template's text before the conversation (the policy text).
PREFIX_PROBES = ("a", "z")


def conversation(kind: Moderate, content: str) -> list[dict]:
    turns = [{"role": "user", "content": content}]
    return turns + [{"role": "assistant", "content": content}] if kind is Moderate.response else turns


def too_long(length: int, limit: int) -> GenResult | None:
    """The `too_long` outcome of a conversation the model cannot read whole: the policy decides
    what it does (`too_long_action`), never the fail mode."""
    if length <= limit:
        return None
    return GenResult(None, "", f"too_long: the templated conversation is {length} tokens and the model reads at most "
                               f"{limit} (its maximum positions, or what the actor's KV cache budget gen_kv_cache_mb "
                               "holds, less the answer); shorten it or split it", 0.0,
                     too_long=True)


def checkpoint_dtype(config: dict, dtype: str) -> torch.dtype:
    """`auto` is the checkpoint's own dtype, as transformers reads it."""
    if dtype == "auto":
        dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, dtype)


class GenEngine:
    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto", max_batch_size: int = 16,
                 max_new_tokens: int = 64, mode: str = "score", reuse_prefix: bool = True,
                 kv_cache_mb: int | None = None, speculative: bool = True):
        """kv_cache_mb: what the KV cache of a batch may take (score mode); a batch is split to stay
        within it, and a conversation that alone would not fit is `too_long`. speculative: the
        answer's tail decoded from the grammar's drafts (`gen_drafts.py`), else one token a step."""
        if mode not in ("score", "generate"):
            raise ValueError(f"mode must be 'score' or 'generate', not {mode!r}")
        try:
            if mode == "generate":  # transformers' own model and tokenizer, imported only here
                from transformers import AutoModelForCausalLM, AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
                if self.tokenizer.pad_token_id is None:
                    self.tokenizer.pad_token = self.tokenizer.eos_token
                self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
                self.max_positions = self.model.config.max_position_embeddings
            else:
                self.tokenizer = ChatTokenizer.from_pretrained(model)
                config, weights = load_checkpoint(model)
                self.max_positions = config["max_position_embeddings"]
                self.scorer = GenScorer(config, weights, device=device, dtype=checkpoint_dtype(config, dtype),
                                        max_batch_size=max_batch_size,
                                        kv_cache_bytes=None if kv_cache_mb is None else kv_cache_mb << 20)
        except (OSError, ValueError, KeyError) as exc:
            raise load_checkpoint_error(model, exc) from exc
        if self.tokenizer.chat_template is None:
            raise RuntimeError(f"{model!r} has no chat template; Qwen3Guard-Gen checkpoints carry one")
        self.model_id = model
        self.device = device
        self.max_batch_size = max_batch_size
        self.max_new_tokens = max_new_tokens
        self.mode, self.reuse_prefix, self.speculative = mode, reuse_prefix, speculative
        self.forced_ids = self.tokenizer(FORCED_PREFIX, add_special_tokens=False)["input_ids"]
        self.label_ids = [label_token(self.tokenizer, label) for label in LABELS]
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
                         if i is not None}
        self._prefixes: dict[Moderate, list[int]] = {}
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._drafts = {kind: AnswerDrafts(self.tokenizer, FORCED_PREFIX, end, kind) for kind in Moderate}

    def input_ids(self, request: GenRequest) -> list[int]:
        return input_ids(self.tokenizer, request)

    @torch.inference_mode()
    def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        """Judge requests in sub-batches of one kind (they share a prefix), sorted by length (little padding)."""
        prompts = [self.input_ids(r) for r in requests]
        span = self.max_positions if self.mode != "score" else min(self.max_positions, self.scorer.max_span())
        limit = span - len(self.forced_ids) - self.max_new_tokens
        results: list[GenResult | None] = [too_long(len(ids), limit) for ids in prompts]
        for kind in Moderate:
            order = sorted((i for i, r in enumerate(requests) if r.moderate is kind and results[i] is None),
                           key=lambda i: len(prompts[i]))
            batch: list[int] = []
            for i in order:  # the longest so far is the last: it decides how many fit
                if batch and len(batch) + 1 > min(self.max_batch_size, self._rows_within(len(prompts[i]))):
                    self._classify_batch(requests, prompts, batch, kind, results)
                    batch = []
                batch.append(i)
            if batch:
                self._classify_batch(requests, prompts, batch, kind, results)
        return results

    def _rows_within(self, length: int) -> int:
        """Requests of up to `length` tokens one batch may hold within the KV budget."""
        if self.mode != "score":
            return self.max_batch_size
        return self.scorer.rows_within(length + len(self.forced_ids) + self.max_new_tokens)

    def _classify_batch(self, requests: list[GenRequest], prompts: list[list[int]], chosen: list[int], kind: Moderate,
                        results: list[GenResult | None]) -> None:
        began = time.perf_counter()
        if self.mode == "generate":
            answers = [(text, None) for text in self._generate([prompts[i] for i in chosen])]
        else:
            answers = self._score([prompts[i] for i in chosen], kind)
        latency_ms = (time.perf_counter() - began) * 1000
        for i, (text, probabilities) in zip(chosen, answers):
            results[i] = GenResult.parsed(text, kind, latency_ms, probabilities)

    def _prefix(self, kind: Moderate) -> list[int]:
        if kind not in self._prefixes:
            a, b = (self.input_ids(GenRequest(conversation(kind, content), kind)) for content in PREFIX_PROBES)
            shared = 0
            while shared < min(len(a), len(b)) and a[shared] == b[shared]:
                shared += 1
            self._prefixes[kind] = a[:shared]
        return self._prefixes[kind]

    def _score(self, prompts: list[list[int]], kind: Moderate) -> list[tuple[str, dict[str, float]]]:
        shared = self._prefix(kind) if self.reuse_prefix else []
        # a request that does not start with the prefix (its text merged into it) makes the batch prefill everything
        prefix = shared if all(ids[: len(shared)] == shared for ids in prompts) else []
        scored = self.scorer.score(prefix, [ids[len(prefix):] + self.forced_ids for ids in prompts], self.label_ids,
                                   self.stop_ids, self.max_new_tokens,
                                   self._drafts[kind].draft if self.speculative else None)
        texts = self.tokenizer.batch_decode([s.answer_ids for s in scored], skip_special_tokens=True)
        return [(FORCED_PREFIX + text, dict(zip(LABELS, s.label_probabilities))) for text, s in zip(texts, scored)]

    def _generate(self, prompts: list[list[int]]) -> list[str]:
        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


class NoopGenEngine:
    """Answers Safe to everything without a model. It exists for `guardstream bench pipeline`, which
    measures what the broker, Faust and Ray cost without an engine; its verdicts name it as model."""

    model_id = "noop"

    def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        safe = GenJudgement(RiskLevel.safe, [], None)
        return [GenResult(safe, "Safety: Safe\nCategories: None", None, 0.0, {"Safe": 1.0, "Unsafe": 0.0,
                                                                               "Controversial": 0.0}) for _ in requests]

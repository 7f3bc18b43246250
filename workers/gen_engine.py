"""Qwen3Guard-Gen on the transformers backend: the checkpoint's own chat template, the answer
block parsed, in one of two modes.

- `generate`: the model card's way, batched greedy `generate()` of the whole answer; the reference.
- `score` (default): the templated input plus the forced `Safety:` prefix in one forward, whose
  next-token distribution over the three label words gives label and probabilities; then the few
  tokens of `Categories:`/`Refusal:` are decoded greedily from the KV cache. The part of the template
  before the conversation (the policy text) is the same for every request of a kind: its KV is
  computed once per engine and reused, so each request only prefills its own conversation.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

LABELS = ("Safe", "Unsafe", "Controversial")
FORCED_PREFIX = "Safety:"

from guardstream.schemas import Moderate
from guardstream.workers.gen_output import GenJudgement, MalformedOutput, parse_gen_output


def label_token(tokenizer, label: str) -> int:
    """The first sub-token of a label word as the model writes it after `Safety:` (not hard-coded)."""
    forced = tokenizer(FORCED_PREFIX, add_special_tokens=False)["input_ids"]
    with_label = tokenizer(f"{FORCED_PREFIX} {label}", add_special_tokens=False)["input_ids"]
    if with_label[: len(forced)] != forced:
        raise RuntimeError(f"the tokenizer merges {FORCED_PREFIX!r} with the label {label!r}; cannot score labels")
    return with_label[len(forced)]


@dataclass(frozen=True)
class GenRequest:
    messages: list[dict]  # [{"role": "user"|"assistant", "content": str}, ...]
    moderate: Moderate


@dataclass(frozen=True)
class GenResult:
    judgement: GenJudgement | None
    raw_output: str
    error: str | None
    latency_ms: float
    probabilities: dict[str, float] | None = None  # over the three labels, in score mode


def load_checkpoint_error(model: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load Qwen3Guard checkpoint {model!r}: {exc}. Pass a local directory with "
        "config.json, tokenizer files and safetensors weights, or a hub id on a machine that can "
        "reach the hub (or has it in its HF cache)."
    )


class GenEngine:
    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto", max_batch_size: int = 16,
                 max_new_tokens: int = 64, mode: str = "score", reuse_prefix: bool = True):
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:
            raise load_checkpoint_error(model, exc) from exc
        if self.tokenizer.chat_template is None:
            raise RuntimeError(f"{model!r} has no chat template; Qwen3Guard-Gen checkpoints carry one")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model_id = model
        self.device = device
        self.max_batch_size = max_batch_size
        self.max_new_tokens = max_new_tokens
        if mode not in ("score", "generate"):
            raise ValueError(f"mode must be 'score' or 'generate', not {mode!r}")
        self.mode, self.reuse_prefix = mode, reuse_prefix
        self.forced_ids = self.tokenizer(FORCED_PREFIX, add_special_tokens=False)["input_ids"]
        self.label_ids = [label_token(self.tokenizer, label) for label in LABELS]
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
                         if i is not None}
        self._prefixes: dict[Moderate, tuple[list[int], DynamicCache]] = {}


    def render(self, request: GenRequest) -> str:
        return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        """Judge requests in sub-batches of one kind (they share a prefix), sorted by length (little padding)."""
        prompts = [self.render(r) for r in requests]
        results: list[GenResult | None] = [None] * len(requests)
        for kind in Moderate:
            order = sorted((i for i, r in enumerate(requests) if r.moderate is kind), key=lambda i: len(prompts[i]))
            for start in range(0, len(order), self.max_batch_size):
                self._classify_batch(requests, prompts, order[start : start + self.max_batch_size], kind, results)
        return results

    def _classify_batch(self, requests: list[GenRequest], prompts: list[str], chosen: list[int], kind: Moderate,
                        results: list[GenResult | None]) -> None:
        began = time.perf_counter()
        if self.mode == "generate":
            answers = [(text, None) for text in self._generate([prompts[i] for i in chosen])]
        else:
            answers = self._score([prompts[i] for i in chosen], kind)
        latency_ms = (time.perf_counter() - began) * 1000
        for i, (text, probabilities) in zip(chosen, answers):
            try:
                results[i] = GenResult(parse_gen_output(text, kind), text, None, latency_ms, probabilities)
            except MalformedOutput as exc:
                results[i] = GenResult(None, text, f"malformed model output: {exc}", latency_ms, probabilities)

    def _prefix(self, kind: Moderate) -> tuple[list[int], DynamicCache]:
        """Token ids every request of this kind starts with, and their KV, computed once."""
        if kind not in self._prefixes:
            turns = [[{"role": "user", "content": c}] for c in ("a", "z z")]
            if kind is Moderate.response:
                turns = [t + [{"role": "assistant", "content": c}] for t, c in zip(turns, ("b", "y y"))]
            a, b = (self.tokenizer(self.render(GenRequest(t, kind)), add_special_tokens=False)["input_ids"] for t in turns)
            shared = 0
            while shared < min(len(a), len(b)) and a[shared] == b[shared]:
                shared += 1
            ids = a[:shared]
            cache = DynamicCache(config=self.model.config)
            if ids:
                self.model(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True)
            self._prefixes[kind] = (ids, cache)
        return self._prefixes[kind]

    def _score(self, prompts: list[str], kind: Moderate) -> list[tuple[str, dict[str, float]]]:
        full = [self.tokenizer(p, add_special_tokens=False)["input_ids"] + self.forced_ids for p in prompts]
        prefix, prefix_cache = self._prefix(kind) if self.reuse_prefix else ([], None)
        if any(ids[: len(prefix)] != prefix for ids in full):  # a request that does not share it: prefill everything
            prefix, prefix_cache = [], None
        rows = [ids[len(prefix):] for ids in full]
        width, batch = max(map(len, rows)), len(rows)
        pad = self.tokenizer.pad_token_id
        # [prefix | left padding | own tokens]: every row's last token sits in the last column
        tokens = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(prefix) + [0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = torch.tensor([[0] * (width - len(r)) + list(range(len(prefix), len(prefix) + len(r))) for r in rows],
                                 device=self.device)
        cache = DynamicCache(config=self.model.config)
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(batch)
        logits = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True).logits[:, -1].float()
        label_probs = torch.softmax(logits[:, self.label_ids], -1)
        generated = [[] for _ in range(batch)]
        done = [False] * batch
        next_ids = logits.argmax(-1)
        last = positions[:, -1]
        for _ in range(self.max_new_tokens):
            for row, token in enumerate(next_ids.tolist()):
                if not done[row]:
                    done[row] = token in self.stop_ids
                    if not done[row]:
                        generated[row].append(token)
            if all(done):
                break
            mask = torch.cat([mask, torch.ones(batch, 1, dtype=mask.dtype, device=self.device)], 1)
            last = last + 1
            logits = self.model(input_ids=next_ids[:, None], attention_mask=mask, position_ids=last[:, None],
                                past_key_values=cache, use_cache=True).logits[:, -1]
            next_ids = logits.argmax(-1)
        texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [(FORCED_PREFIX + text, dict(zip(LABELS, probs))) for text, probs in zip(texts, label_probs.tolist())]

    def _generate(self, prompts: list[str]) -> list[str]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

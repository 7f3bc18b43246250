"""Qwen3Guard-Gen on the transformers backend: the checkpoint's own chat template, batched
greedy generation, and the parsed answer block."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from guardstream.schemas import Moderate
from guardstream.workers.gen_output import GenJudgement, MalformedOutput, parse_gen_output


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


def load_checkpoint_error(model: str, exc: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load Qwen3Guard checkpoint {model!r}: {exc}. Pass a local directory with "
        "config.json, tokenizer files and safetensors weights, or a hub id on a machine that can "
        "reach the hub (or has it in its HF cache)."
    )


class GenEngine:
    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto", max_batch_size: int = 16,
                 max_new_tokens: int = 64):
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

    def render(self, request: GenRequest) -> str:
        return self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)

    @torch.inference_mode()
    def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        """Judge requests in length-sorted sub-batches so that padding stays small."""
        prompts = [self.render(r) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        results: list[GenResult | None] = [None] * len(requests)
        for start in range(0, len(order), self.max_batch_size):
            chosen = order[start : start + self.max_batch_size]
            began = time.perf_counter()
            texts = self._generate([prompts[i] for i in chosen])
            latency_ms = (time.perf_counter() - began) * 1000
            for i, text in zip(chosen, texts):
                try:
                    results[i] = GenResult(parse_gen_output(text, requests[i].moderate), text, None, latency_ms)
                except MalformedOutput as exc:
                    results[i] = GenResult(None, text, f"malformed model output: {exc}", latency_ms)
        return results

    def _generate(self, prompts: list[str]) -> list[str]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)

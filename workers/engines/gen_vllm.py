"""Qwen3Guard-Gen on vLLM (`--gen-backend vllm`): the same requests, answers and verdict format as
`GenEngine`, served by vLLM's engine with prefix caching (the policy text is cached once).

Label probabilities come from the logprobs of the first token after the forced `Safety:` prefix,
renormalised over the three label words (a label outside the returned top-k counts as 0).
vLLM spawns processes: build this inside a Ray actor or under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import math
import os
import time

from guardstream.workers.engines.gen_engine import FORCED_PREFIX, LABELS, input_ids, label_token, too_long
from guardstream.workers.engines.messages import GenRequest, GenResult


class VllmGenEngine:
    def __init__(self, model: str, device: str = "cpu", dtype: str = "auto", max_batch_size: int = 16,
                 max_new_tokens: int = 64, max_model_len: int = 4096):
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU backend's KV cache
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model, dtype=dtype, enable_prefix_caching=True,
                       max_model_len=max_model_len, max_num_seqs=max_batch_size,
                       gpu_memory_utilization=0.3 if device == "cpu" else 0.85, enforce_eager=device == "cpu")
        self.tokenizer = self.llm.get_tokenizer()
        self.model_id, self.max_batch_size, self.max_model_len = model, max_batch_size, max_model_len
        self.forced_ids = self.tokenizer(FORCED_PREFIX, add_special_tokens=False)["input_ids"]
        self.max_new_tokens = max_new_tokens
        self.label_ids = [label_token(self.tokenizer, label) for label in LABELS]
        stop = [i for i in (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")) if i is not None]
        self.sampling = SamplingParams(temperature=0, max_tokens=max_new_tokens, logprobs=20, stop_token_ids=stop)

    def input_ids(self, request: GenRequest) -> list[int]:
        return input_ids(self.tokenizer, request) + self.forced_ids

    def classify(self, requests: list[GenRequest]) -> list[GenResult]:
        prompts = [self.input_ids(r) for r in requests]
        results = [too_long(len(ids), self.max_model_len - self.max_new_tokens) for ids in prompts]
        fit = [i for i, r in enumerate(results) if r is None]
        for start in range(0, len(fit), self.max_batch_size):
            chosen = fit[start : start + self.max_batch_size]
            for i, result in zip(chosen, self._classify_batch([requests[i] for i in chosen], [prompts[i] for i in chosen])):
                results[i] = result
        return results

    def _classify_batch(self, requests: list[GenRequest], prompts: list[list[int]]) -> list[GenResult]:
        began = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], self.sampling, use_tqdm=False)
        latency_ms = (time.perf_counter() - began) * 1000
        results = []
        for request, output in zip(requests, outputs):
            completion = output.outputs[0]
            probabilities = self._label_probabilities(completion.logprobs[0] if completion.logprobs else {})
            results.append(GenResult.parsed(FORCED_PREFIX + completion.text, request.moderate, latency_ms, probabilities))
        return results

    def _label_probabilities(self, first: dict) -> dict[str, float]:
        weights = [math.exp(first[i].logprob) if i in first else 0.0 for i in self.label_ids]
        total = sum(weights) or 1.0
        return {label: w / total for label, w in zip(LABELS, weights)}

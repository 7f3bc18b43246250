"""`guardstream bench gen`: classifications/s and latency of each Gen path, next to the model card's
way (`generate(max_new_tokens=128)`, one message at a time) measured in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from guardstream.schemas import Moderate
from guardstream.workers.gen_engine import GenEngine, GenRequest
from guardstream.workers.tiny_checkpoints import load_corpus


@dataclass(frozen=True)
class GenMeasurement:
    path: str
    batch: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    agree: float  # share of requests whose label equals the reference's

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


PATHS = {  # name → GenEngine options
    "generate() batched": dict(mode="generate"),
    "label scoring": dict(mode="score", reuse_prefix=False),
    "label scoring + prefix reuse": dict(mode="score", reuse_prefix=True),
}


def bench_requests(count: int) -> list[GenRequest]:
    corpus = load_corpus()
    return [GenRequest(corpus[i % len(corpus)].messages, Moderate(corpus[i % len(corpus)].kind)) for i in range(count)]


def _measure(engine: GenEngine, name: str, batch: int, requests: list[GenRequest], reference: list | None) -> GenMeasurement:
    engine.max_batch_size = batch
    engine.classify(requests[: min(len(requests), batch)])  # warm-up (and the prefix KV)
    began = time.perf_counter()
    results = engine.classify(requests)
    seconds = time.perf_counter() - began
    labels = [r.judgement.risk_level if r.judgement else None for r in results]
    agree = 1.0 if reference is None else sum(a == b for a, b in zip(labels, reference)) / len(labels)
    return GenMeasurement(name, batch, len(requests), seconds, [r.latency_ms for r in results], agree), labels


def run_gen_bench(model: str, batches: list[int], count: int, device: str, dtype: str,
                  report: Callable[[GenMeasurement], None], with_vllm: bool = False) -> list[GenMeasurement]:
    requests = bench_requests(count)
    reference_engine = GenEngine(model, device=device, dtype=dtype, mode="generate", max_new_tokens=128)
    first, reference = _measure(reference_engine, "reference: generate(128), one at a time", 1, requests, None)
    report(first)
    results = [first]
    engines = ((name, lambda options=options: GenEngine(model, device=device, dtype=dtype, **options))
               for name, options in PATHS.items())
    if with_vllm:
        from guardstream.workers.gen_vllm import VllmGenEngine

        engines = [*engines, ("vLLM, prefix caching", lambda: VllmGenEngine(model, device=device, dtype=dtype,
                                                                            max_batch_size=max(batches)))]
    for name, make in engines:
        engine = make()
        for batch in batches:
            measured, _ = _measure(engine, name, batch, requests, reference)
            results.append(measured)
            report(measured)
    return results

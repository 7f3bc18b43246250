"""`guardstream bench gen`: classifications/s and latency of each Gen path, next to the model card's
way (`generate(max_new_tokens=128)`, one message at a time) measured in the same run.

On a checkpoint (the tiny fixture or a real one) every path runs through `GenEngine` on the fixture
corpus, and label agreement with the reference is reported. On a random-weight model of a real
Qwen3Guard-Gen shape (`--config 0.6b|4b|8b`) requests are token ids of a realistic length and
answers have a fixed length, since random weights never write a stop token; those rows measure
speed, not verdicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from guardstream.bench.timing import Measurement, device_sync, results_table, time_batches
from guardstream.dev.tiny_checkpoints import load_corpus
from guardstream.schemas import Moderate
from guardstream.workers.engines.gen_engine import GenEngine
from guardstream.workers.engines.messages import GenRequest
from guardstream.workers.engines.gen_scorer import GenScorer
from guardstream.bench.shapes import QWEN3GUARD_SHAPES


PATHS = {  # name → GenEngine options
    "generate() batched": dict(mode="generate"),
    "label scoring": dict(mode="score", reuse_prefix=False, speculative=False),
    "label scoring + prefix reuse": dict(mode="score", reuse_prefix=True, speculative=False),
    "label scoring + prefix reuse + answer drafts": dict(mode="score", reuse_prefix=True, speculative=True),
}


def bench_requests(count: int) -> list[GenRequest]:
    corpus = load_corpus()
    return [GenRequest(corpus[i % len(corpus)].messages, Moderate(corpus[i % len(corpus)].kind)) for i in range(count)]


def _measure(engine: GenEngine, name: str, batch: int, requests: list[GenRequest], reference: list | None) -> Measurement:
    engine.max_batch_size = batch
    engine.classify(requests[: min(len(requests), batch)])  # warm-up (and the prefix KV)
    scorer = getattr(engine, "scorer", None)
    counted = (scorer.batches, scorer.decode_forwards) if scorer else (0, 0)
    began = time.perf_counter()
    results = engine.classify(requests)
    seconds = time.perf_counter() - began
    labels = [r.judgement.risk_level if r.judgement else None for r in results]
    agree = 1.0 if reference is None else sum(a == b for a, b in zip(labels, reference)) / len(labels)
    forwards = 1 + (scorer.decode_forwards - counted[1]) / (scorer.batches - counted[0]) if scorer else None
    return Measurement(name, batch, len(requests), seconds, [r.latency_ms for r in results], agree=agree,
                       forwards=forwards), labels


def run_gen_bench(model: str, batches: list[int], count: int, device: str, dtype: str,
                  report: Callable[[Measurement], None], with_vllm: bool = False) -> list[Measurement]:
    requests = bench_requests(count)
    reference_engine = GenEngine(model, device=device, dtype=dtype, mode="generate", max_new_tokens=128)
    first, reference = _measure(reference_engine, "reference: generate(128), one at a time", 1, requests, None)
    report(first)
    results = [first]
    engines = ((name, lambda options=options: GenEngine(model, device=device, dtype=dtype, **options))
               for name, options in PATHS.items())
    if with_vllm:
        from guardstream.workers.engines.gen_vllm import VllmGenEngine

        engines = [*engines, ("vLLM, prefix caching", lambda: VllmGenEngine(model, device=device, dtype=dtype,
                                                                            max_batch_size=max(batches)))]
    for name, make in engines:
        engine = make()
        for batch in batches:
            measured, _ = _measure(engine, name, batch, requests, reference)
            results.append(measured)
            report(measured)
    return results


# Qwen3Guard-Gen 0.6B and 4B tie the output projection to the embedding; 8B does not.
TIED_EMBEDDINGS = {"0.6b": True, "4b": True, "8b": False}


@dataclass(frozen=True)
class Workload:
    """Token counts of one Gen request, estimated for the published chat template and Qwen's tokenizer."""
    prefix_tokens: int = 220  # the task and policy text before the conversation, the same for every request
    conversation_tokens: tuple[int, int] = (32, 256)  # per request, drawn uniformly
    tail_tokens: int = 80  # the instructions after the conversation and the assistant header
    answer_tokens: int = 14  # "Safety: Unsafe\nCategories: Violent\nRefusal: No"
    forced_tokens: int = 2  # "Safety:"

    def requests(self, count: int, vocab: int, seed: int = 0) -> tuple[list[int], list[list[int]]]:
        """The shared prefix and each request's own ids (conversation, tail, forced prefix), shortest first."""
        generator = torch.Generator().manual_seed(seed)
        ids = lambda n: torch.randint(10, vocab, (n,), generator=generator).tolist()  # noqa: E731
        prefix, tail, forced = ids(self.prefix_tokens), ids(self.tail_tokens), ids(self.forced_tokens)
        low, high = self.conversation_tokens
        lengths = sorted(torch.randint(low, high + 1, (count,), generator=generator).tolist())
        return prefix, [ids(n) + tail + forced for n in lengths]


def random_gen_model(config_name: str, seed: int = 0, **overrides) -> Qwen3ForCausalLM:
    """A Qwen3ForCausalLM with the real shape and weight names of a Qwen3Guard-Gen size, random weights."""
    shape = {"vocab_size": 151_936, **QWEN3GUARD_SHAPES[config_name], **overrides}
    config = Qwen3Config(rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=32_768,
                         tie_word_embeddings=TIED_EMBEDDINGS[config_name], eos_token_id=None, pad_token_id=0, **shape)
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(config).eval()


def matmul_flops_per_token(config: Qwen3Config) -> float:
    c = config
    q, kv = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    per_layer = c.hidden_size * (q + 2 * kv) + q * c.hidden_size + 3 * c.hidden_size * c.intermediate_size
    return 2.0 * c.num_hidden_layers * per_layer


def run_gen_shape_bench(config_name: str, batches: list[int], count: int, device: str, dtype: torch.dtype,
                        report: Callable[[Measurement], None], workload: Workload = Workload(),
                        **overrides) -> list[Measurement]:
    model = random_gen_model(config_name, **overrides).to(device=device, dtype=dtype)
    sync = device_sync(device)
    prefix, rows = workload.requests(count, model.config.vocab_size)
    useful = matmul_flops_per_token(model.config) * sum(map(len, rows))
    answer = workload.answer_tokens - workload.forced_tokens

    latencies, began = [], time.perf_counter()
    with torch.inference_mode():
        for row in rows:  # the model card's way: the whole templated input, the whole answer generated
            t0 = time.perf_counter()
            model.generate(torch.tensor([prefix + row[: -workload.forced_tokens]], device=device), do_sample=False,
                           max_new_tokens=workload.answer_tokens, min_new_tokens=workload.answer_tokens)
            sync()
            latencies.append((time.perf_counter() - t0) * 1000)
    results = [Measurement("reference: generate(), one at a time", 1, count, time.perf_counter() - began,
                           latencies, useful_flops=useful)]
    report(results[-1])
    scorer = GenScorer(model.config.to_dict(), dict(model.state_dict()), device=device, dtype=dtype,
                       max_batch_size=max(batches))
    label_ids = rows[0][-3:]  # any three ids: random weights have no label words
    # Random weights answer off the grammar, so drafts from it would all be wrong; the drafts row
    # drafts greedy's own answers instead, as a trained model's grammar drafts mostly are.
    greedy = {tuple(s.answer_ids[:k]): s.answer_ids for s in scorer.score(prefix, rows, label_ids, set(), answer)
              for k in range(1, answer)}
    right = lambda so_far: greedy.get(tuple(so_far), [])[len(so_far):]  # noqa: E731
    for name, shared, draft in (("label scoring", [], None), ("label scoring + prefix reuse", prefix, None),
                                ("label scoring + prefix reuse + answer drafts (right)", prefix, right)):
        own = [r if shared else prefix + r for r in rows]
        for batch in batches:
            scorer.score(shared, own[:batch], label_ids, set(), answer, draft)  # warm-up (and the prefix KV)
            sync()
            counted = (scorer.batches, scorer.decode_forwards)
            seconds, latencies = time_batches(own, batch, lambda chosen: scorer.score(shared, chosen, label_ids, set(),
                                                                                     answer, draft), sync)
            forwards = 1 + (scorer.decode_forwards - counted[1]) / (scorer.batches - counted[0])
            results.append(Measurement(name, batch, count, seconds, latencies, useful_flops=useful, forwards=forwards))
            report(results[-1])
    return results


def gen_table(results: list[Measurement], title: str):
    """Every path against the first row (the reference), with label agreement on a checkpoint or the
    useful FLOP/s on random weights."""
    base = results[0].per_second
    last = "label agreement" if results[0].agree is not None else "useful TFLOP/s"
    rows = [(m.label, str(m.batch), f"{m.per_second:,.1f}" if m.per_second >= 1 else f"{m.per_second:.3f}",
             f"{m.percentile(0.5):.1f}", f"{m.percentile(0.99):.1f}", "" if m.forwards is None else f"{m.forwards:.1f}",
             f"{m.per_second / base:.1f}", f"{m.agree:.0%}" if m.agree is not None else f"{m.useful_tflops:.3f}")
            for m in results]
    return results_table(title, ("path", "batch", "classifications/s", "p50 ms", "p99 ms", "forwards per batch",
                                 "× reference", last), rows)

"""`guardstream bench stream`: moderated tokens/s and chunk latency of the Stream engine, next to
baselines measured in the same run.

- baseline (a), the reference behaviour: one stream at a time, the whole accumulated sequence
  re-processed by a plain Hugging Face forward for every new token;
- baseline (b), the cached path one stream at a time: the engine's row for 1 stream at the same
  chunk size (a whole reply of one stream, then the next);
- the engine with N concurrent streams, each step judging one chunk of every stream in one forward.

Only reply tokens are timed; every stream's prompt is opened (prefilled) before the clock starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from transformers import Qwen3Config

from guardstream.bench.timing import Measurement, device_sync, results_table
from guardstream.schemas.labels import RISK_LABELS
from guardstream.bench.shapes import QWEN3GUARD_SHAPES
from guardstream.workers.engines.messages import StreamCall
from guardstream.workers.engines.stream_engine import StreamEngine
from guardstream.dev.stream_reference import StreamGuardReference

IM_END = 151_645  # Qwen3's <|im_end|>, which ends the prompt


def random_checkpoint(shape: str, seed: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
    """A config and random weights with the real model's shapes and weight names (guard_inner_size is
    a guess; it only sizes two small projections). These measure speed, not verdicts."""
    config = Qwen3Config(vocab_size=151_936, rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=32_768,
                         **QWEN3GUARD_SHAPES[shape]).to_dict()
    labels = {str(i): label for i, label in enumerate(RISK_LABELS)}
    categories = {str(i): f"category-{i}" for i in range(9)}
    config.update(architectures=["Qwen3ForGuardModel"], guard_inner_size=512, num_risk_level=3, num_category=9,
                  num_query_risk_level=3, num_query_category=9, response_risk_level_map=labels,
                  response_category_map=categories, query_risk_level_map=labels, query_category_map=categories)
    torch.manual_seed(seed)
    module = StreamGuardReference(Qwen3Config.from_dict(config), config)
    return config, {k: v.detach() for k, v in module.state_dict().items()}


def _reply(vocab: int, length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (length,), generator=generator).tolist()


def measure_engine(engine: StreamEngine, prompt: list[int], streams: int, chunk: int, reply_tokens: int,
                   vocab: int, sync: Callable[[], None]) -> Measurement:
    replies = [_reply(vocab, reply_tokens, seed=i) for i in range(streams)]
    engine.step([StreamCall(f"s{i}", [], prompt_ids=prompt) for i in range(streams)])
    latencies, began = [], time.perf_counter()
    for start in range(0, reply_tokens, chunk):
        t0 = time.perf_counter()
        engine.step([StreamCall(f"s{i}", replies[i][start : start + chunk]) for i in range(streams)])
        sync()
        latencies += [(time.perf_counter() - t0) * 1000] * streams
    seconds = time.perf_counter() - began
    for i in range(streams):
        engine.close(f"s{i}")
    label = "(b) cached, 1 stream" if streams == 1 else f"batched, {streams} streams"
    return Measurement(label, streams, streams * reply_tokens, seconds, latencies, chunk=chunk)


@torch.inference_mode()
def measure_reference(reference: StreamGuardReference, prompt: list[int], reply_tokens: int, vocab: int, device: str,
                      sync: Callable[[], None]) -> Measurement:
    reply = _reply(vocab, reply_tokens, seed=0)
    latencies, began = [], time.perf_counter()
    for i in range(1, reply_tokens + 1):
        t0 = time.perf_counter()
        h = reference.hidden_states(torch.tensor([prompt + reply[:i]], device=device))
        reference.response_logits(h[:, -1:])
        sync()
        latencies.append((time.perf_counter() - t0) * 1000)
    return Measurement("(a) reference: re-process per token", 1, reply_tokens, time.perf_counter() - began, latencies,
                       chunk=1)


def run_stream_bench(config_name: str, streams: list[int], chunks: list[int], reply_tokens: int, prompt_tokens: int,
                     reference_tokens: int, device: str, dtype: torch.dtype, report: Callable[[Measurement], None],
                     checkpoint: str | None = None) -> list[Measurement]:
    if config_name == "tiny":
        from guardstream.workers.engines.qwen3 import load_checkpoint

        config, weights = load_checkpoint(checkpoint)
    else:
        config, weights = random_checkpoint(config_name)
    vocab = config["vocab_size"]
    prompt = _reply(vocab, prompt_tokens - 1, seed=99) + [IM_END]
    sync = device_sync(device)
    reference = StreamGuardReference(Qwen3Config.from_dict(config), config)
    reference.load_state_dict(weights)
    reference = reference.to(device=device, dtype=dtype).eval()
    results = [measure_reference(reference, prompt, reference_tokens, vocab, device, sync)]
    report(results[-1])
    del reference
    engine = StreamEngine(config, weights, device=device, dtype=dtype, im_end_id=IM_END, max_sessions=max(streams))
    measure_engine(engine, prompt, 1, chunks[0], min(8, reply_tokens), vocab, sync)  # warm-up
    for chunk in chunks:
        for n in streams:
            results.append(measure_engine(engine, prompt, n, chunk, reply_tokens, vocab, sync))
            report(results[-1])
    return results


def ratios(results: list[Measurement]) -> list[tuple[Measurement, float, float | None]]:
    """Each engine row with its speed-up over (a) and over (b) at the same chunk size."""
    reference = results[0].per_second
    single = {m.chunk: m.per_second for m in results[1:] if m.batch == 1}
    return [(m, m.per_second / reference, m.per_second / single[m.chunk] if m.chunk in single else None)
            for m in results[1:]]


def stream_table(results: list[Measurement], title: str):
    """Baseline (a) first, then every engine row with its speed-ups over (a) and (b)."""
    a = results[0]
    rows = [(a.label, "1", "1", f"{a.per_second:,.0f}", f"{a.percentile(0.5):.2f}", f"{a.percentile(0.99):.2f}", "1.0", "")]
    rows += [(m.label, str(m.batch), str(m.chunk), f"{m.per_second:,.0f}", f"{m.percentile(0.5):.2f}",
              f"{m.percentile(0.99):.2f}", f"{vs_a:.1f}", f"{vs_b:.1f}" if vs_b else "") for m, vs_a, vs_b in ratios(results)]
    return results_table(title, ("mode", "streams", "chunk", "tokens/s", "chunk p50 ms", "chunk p99 ms", "× (a)", "× (b)"), rows)

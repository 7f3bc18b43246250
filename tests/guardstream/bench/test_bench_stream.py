"""The benchmark's plumbing (not its numbers: speed is reported by `guardstream bench`, never asserted)."""

import torch

from guardstream.bench.stream import random_checkpoint, ratios, run_stream_bench
from guardstream.workers.engines.stream_engine import StreamEngine


def test_bench_measures_every_row_and_its_ratios(tiny):
    seen = []
    results = run_stream_bench("tiny", [1, 3], [2, 4], reply_tokens=8, prompt_tokens=6, reference_tokens=4,
                               device="cpu", dtype=torch.float32, report=seen.append, checkpoint=str(tiny.stream))
    assert [(m.batch, m.chunk) for m in results] == [(1, 1), (1, 2), (3, 2), (1, 4), (3, 4)] and seen == results
    assert [m.count for m in results] == [4, 8, 24, 8, 24]
    assert all(len(m.latencies_ms) == m.count // m.chunk for m in results[1:])
    rows = ratios(results)
    assert [round(vs_b, 6) for m, _, vs_b in rows if m.batch == 1] == [1.0, 1.0]


def test_random_checkpoints_have_the_real_names_and_load_into_the_engine():
    config, weights = random_checkpoint("0.6b")
    assert config["num_hidden_layers"] == 28 and weights["model.embed_tokens.weight"].shape == (151_936, 1024)
    assert "query_risk_level_head.weight" in weights
    shrunk = {**config, "num_hidden_layers": 1}  # load one layer of it to keep the test light
    engine = StreamEngine(shrunk, weights, im_end_id=2)
    assert engine.open("s", [5, 6, 2]).label in ("Safe", "Unsafe", "Controversial")

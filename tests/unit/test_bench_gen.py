"""The Gen benchmark's plumbing (its numbers are reported by `guardstream bench gen`, never asserted)."""

from guardstream.workers.bench_gen import PATHS, run_gen_bench


def test_every_path_and_batch_is_measured_against_the_reference(tiny):
    seen = []
    results = run_gen_bench(str(tiny.gen), [1, 4], count=8, device="cpu", dtype="auto", report=seen.append)
    assert seen == results and results[0].path.startswith("reference") and results[0].batch == 1
    assert [(m.path, m.batch) for m in results[1:]] == [(p, b) for p in PATHS for b in (1, 4)]
    assert all(m.requests == 8 and len(m.latencies_ms) == 8 and m.agree == 1.0 for m in results)

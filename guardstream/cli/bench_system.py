"""Benchmarks of a running system's parts (gateways, recovery, takeover, reload, the Stream
pipeline), and `soak`, which loads a running worker for minutes."""

from __future__ import annotations

import asyncio

import click

from guardstream.cli.bench import bench, fixture_model
from guardstream.cli.common import (bootstrap_option, bootstrap_or_fail, console, int_list, load_settings,
                                    print_table, stream_model_option)


@bench.command("gateways")
@click.option("--gateways", default="1,4,16", show_default=True, help="gateway counts to measure")
@click.option("--requests", type=int, default=256, show_default=True, help="conversations each gateway sends")
def bench_gateways(gateways: str, requests: int) -> None:
    """What each gateway reads and spends per request of its own: fixed vs claimed reply partitions."""
    from guardstream.bench.gateways import gateways_table, run_gateways_bench

    console.print(f"[bold]bench gateways[/] {gateways} gateways, {requests} conversations each, one worker with the "
                  "no-op engine: a fixed reply partition each, then one claimed each")

    def report(r) -> None:
        console.print(f"  measured {r.mode:<16} x{r.gateways:<3}: {r.per_request(r.records):6.2f} records and "
                      f"{r.per_request(r.cpu_s) * 1e6:6,.0f} µs CPU per request")

    print_table(gateways_table(run_gateways_bench(int_list(gateways), requests, load_settings().home, report)))


@bench.command("recovery")
@click.option("--sizes", default="10000,100000,1000000", show_default=True, help="table entries to recover")
@click.option("--stores", default="memory,rocksdb", show_default=True, help="table stores to compare")
def bench_recovery(sizes: str, stores: str) -> None:
    """A sinks worker's recovery time and memory by state size: first start and restart, memory vs RocksDB."""
    from guardstream.bench.recovery import recovery_table, run_recovery_bench

    console.print(f"[bold]bench recovery[/] analytics worker, {sizes} entries, stores {stores}")
    found = run_recovery_bench(int_list(sizes), [s.strip() for s in stores.split(",")], load_settings().home,
                               lambda line: console.print(f"  {line}"))
    print_table(recovery_table(found, "Table recovery by state size (the analytics-routed table)"))


@bench.command("takeover")
@click.option("--seconds", type=float, default=40, show_default=True, help="length of the timed run; the kill is halfway")
@click.option("--rate", type=float, default=100, show_default=True, help="events per second")
@click.option("--window", "window_s", type=float, default=2, show_default=True,
              help="events produced this long before the kill count as in flight")
def bench_takeover(seconds: float, rate: float, window_s: float) -> None:
    """How long verdicts wait when a worker is SIGKILLed: before, in flight at, and after the kill."""
    from guardstream.bench.takeover import run_takeover_bench, takeover_table

    console.print(f"[bold]bench takeover[/] two workers (no-op engine), {rate:g} events/s for {seconds:g}s, one "
                  "SIGKILLed halfway")
    found = run_takeover_bench(seconds, rate, window_s, load_settings().home, lambda line: console.print(f"  {line}"))
    print_table(takeover_table(found, "Produce to verdict around a worker's SIGKILL (session timeout 6 s)"))


@bench.command("reload")
@click.option("--changes", type=int, default=40, show_default=True, help="policy changes to time")
@click.option("--every", "every_s", type=float, default=0.5, show_default=True, help="seconds between changes")
@click.option("--rate", type=float, default=100, show_default=True, help="events per second of the steady load")
def bench_reload(changes: int, every_s: float, rate: float) -> None:
    """How soon a `policy set` decides verdicts, under a steady load, next to a verdict's own delay."""
    from guardstream.bench.reload import reload_table, run_reload_bench

    console.print(f"[bold]bench reload[/] one worker (no-op engine), {rate:g} events/s of one tenant, its policy "
                  f"changed {changes} times, every {every_s:g}s")
    change_ms, verdict_ms = run_reload_bench(changes, every_s, rate, load_settings().home,
                                             lambda line: console.print(f"  {line}"))
    print_table(reload_table(change_ms, verdict_ms, "From a policy change, and from an event, to its first verdict"))


@bench.command("stream-pipeline")
@stream_model_option
@click.option("--streams", default="1,16,64", show_default=True, help="concurrent gateway streams to measure")
@click.option("--tokens-per-s", type=float, default=30, show_default=True, help="reply tokens per second, per stream")
@click.option("--chunk-tokens", type=int, default=4, show_default=True, help="token ids per chunk")
@click.option("--reply-tokens", type=int, default=96, show_default=True, help="reply length per stream")
@click.option("--actor-cpus", type=int, default=1, show_default=True, help="threads of the StreamGuard actor (and engine alone)")
@click.option("--fetch-wait-ms", type=int, default=None, help="the worker's KAFKA_FETCH_MAX_WAIT_MS; default: its "
                                                                "own for the broker it finds")
@click.option("--brokers", default="tansu,kafka", show_default=True,
              help="brokers to measure through, in turn: tansu (embedded), kafka (one-node Apache Kafka)")
def bench_stream_pipeline(stream_model: str | None, streams: str, tokens_per_s: float, chunk_tokens: int,
                          reply_tokens: int, actor_cpus: int, fetch_wait_ms: int | None, brokers: str) -> None:
    """Gateway streams through broker → Faust → Ray → engine: chunk-verdict latency and stop lag at the
    client, next to the broker alone and the engine alone."""
    from guardstream.bench.stream_pipeline import run_stream_pipeline_bench, stream_pipeline_table
    model = stream_model or fixture_model("stream")
    console.print(f"[bold]bench stream-pipeline[/] model={model}: streams {streams} at {tokens_per_s:g} tokens/s in "
                  f"chunks of {chunk_tokens}; engine alone, then a worker (stream agent) and its actor")
    names = [b.strip() for b in brokers.split(",") if b.strip()]
    if not names or set(names) - {"tansu", "kafka"}:
        raise click.UsageError(f"--brokers takes tansu and/or kafka, not {brokers!r}")
    engine, measured = run_stream_pipeline_bench(model, int_list(streams), chunk_tokens, tokens_per_s, reply_tokens,
                                                 actor_cpus, fetch_wait_ms, names, load_settings().home,
                                                 lambda line: console.print(f"  {line}"))
    wait = "the worker's default fetch wait" if fetch_wait_ms is None else f"fetch wait {fetch_wait_ms} ms"
    print_table(stream_pipeline_table(engine, measured, f"Stream pipeline: one worker (stream agent), one StreamGuard "
                                       f"actor with {actor_cpus} thread(s), {tokens_per_s:g} tokens/s per stream, chunks of "
                                       f"{chunk_tokens}, {wait}"), width=160)
    console.print("Latency: produce to verdict at the client; stop lag: from producing the chunk that holds the stop "
                  "token to the stop's arrival, and the reply tokens sent past that chunk meanwhile.")


@click.command()
@bootstrap_option
@click.option("--metrics-url", required=True, help="the worker's metrics endpoint, e.g. http://127.0.0.1:9464/metrics")
@click.option("--streams", type=int, default=16, show_default=True, help="streams running at a time")
@click.option("--minutes", type=float, default=10, show_default=True)
@click.option("--reply-tokens", type=int, default=24, show_default=True, help="tokens per stream")
@click.option("--chunk-tokens", type=int, default=4, show_default=True)
@click.option("--tokens-per-s", type=float, default=30, show_default=True, help="per stream")
@click.option("--every", "every_s", type=float, default=10, show_default=True, help="seconds between samples")
@click.option("--verdicts-per-s", type=float, default=0, show_default=True,
              help="distinct verdicts a second for the analytics agents, besides the streams")
def soak(kafka_bootstrap: str | None, metrics_url: str, streams: int, minutes: float, reply_tokens: int,
         chunk_tokens: int, tokens_per_s: float, every_s: float, verdicts_per_s: float) -> None:
    """Keep N reply streams starting, running and finishing (and verdicts arriving) against a running
    worker; print its memory, table entries, changelog bytes and lag over time."""
    from guardstream.bench.soak import run_soak, soak_table

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)

    def report(s) -> None:
        console.print(f"  {s.at_s:>6.0f}s streams {s.streams_started:>6} started {s.streams_finished:>6} finished | "
                      f"worker {s.worker_rss_mb:,.0f} MB, actors {s.actor_rss_mb:,.0f} MB (KV {s.kv_used_mb:,.1f}) | stream table "
                      f"{s.table_entries:,} | verdicts {s.verdicts_sent:,}, analytics tables {s.analytics_entries:,} | "
                      f"changelog {s.changelog_mb:,.1f} MB | lag {s.lag:,}")

    console.print(f"[bold]soak[/] {streams} streams at a time and {verdicts_per_s:g} verdicts/s for {minutes:g} min "
                  f"against {metrics_url}")
    samples = asyncio.run(run_soak(settings, bootstrap_or_fail(settings), metrics_url, streams, minutes, reply_tokens,
                                   chunk_tokens, tokens_per_s, every_s, report, verdicts_per_s))
    print_table(soak_table(samples))


COMMANDS = (soak,)

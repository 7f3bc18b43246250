"""`guardstream eval`: how well the guard judges a labelled set."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import click

from guardstream.cli.common import (bootstrap_option, bootstrap_or_fail, console, gen_model_option, load_settings,
                                    print_table, stream_model_option)


@click.command("eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", help="only the items of this split (in files whose rows name one, like the fixture corpus)")
@click.option("--through", type=click.Choice(["engines", "pipeline"]), default="engines", show_default=True,
              help="engines: on a Gen engine in this process, offline; pipeline: through a running deployment, "
                   "as a gateway sends (broker, agents, pool)")
@gen_model_option
@stream_model_option
@click.option("--batch-size", type=int, default=8, show_default=True, help="engines: items judged at once")
@click.option("--debounce", type=int, default=2, show_default=True,
              help="engines: consecutive unsafe tokens that stop a stream, for the replies' timeliness")
@bootstrap_option
@click.option("--tenant", default="eval", show_default=True, help="pipeline: the tenant the items are sent as")
@click.option("--timeout", "timeout_s", type=float, default=120, show_default=True,
              help="pipeline: seconds to wait for each verdict (then it counts as an Error)")
@click.option("--concurrency", type=int, default=16, show_default=True, help="pipeline: items in flight at once")
@click.option("--compare", "candidate", metavar="MODEL",
              help="engines: judge the set with this Gen checkpoint too, and give each metric's difference from the "
                   "main model with a paired bootstrap interval, and the items where they disagree")
@click.option("--rounds", type=click.IntRange(min=100, max=100_000), default=1000, show_default=True,
              help="--compare: bootstrap resamples")
@click.option("--plot", "plot_into", type=click.Path(file_okay=False, path_type=Path),
              help="write PNGs into this folder: precision-recall curves per category (strict, loose) and a "
                   "reliability diagram of the unsafe probability (needs guardstream[plots])")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON on stdout, instead of tables")
def evaluate(dataset: Path, split: str | None, through: str, gen_model: str | None, stream_model: str | None,
             batch_size: int, debounce: int, kafka_bootstrap: str | None, tenant: str, timeout_s: float,
             concurrency: int, candidate: str | None, rounds: int, plot_into: Path | None, as_json: bool) -> None:
    """Precision, recall and F1 (strict and loose, overall and per category), the confusion matrix,
    refusal accuracy and latency of Qwen3Guard-Gen on DATASET; on the engines, also how early
    Qwen3Guard-Stream stops the unsafe replies whose unsafe text is marked (`unsafe_from`).

    DATASET is JSONL: the project's labelled items (the fixture corpus's fields) or OpenAI's moderation
    release (docs/evaluation.md). With --compare MODEL, a candidate is judged beside the main model
    on the same items: the offline twin of the canary."""
    from guardstream.evaluation.dataset import DatasetError, load
    from guardstream.evaluation.metrics import report
    from guardstream.evaluation.tables import comparison_tables, tables

    if candidate and through != "engines":
        raise click.UsageError("--compare runs on the engines: both models judge the same items in this process")
    if plot_into:
        from guardstream.evaluation.plots import plot, pyplot
        try:
            pyplot()  # before a long run, not after it
        except RuntimeError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        items = load(dataset, split)
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None

    def progress(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            console.print(f"  {done}/{total} judged")

    timeliness = compared = None
    if through == "engines":
        from transformers import AutoTokenizer

        from guardstream.dev.tiny_checkpoints import with_fixture_models
        from guardstream.evaluation import engines
        from guardstream.evaluation.timeliness import marked, measure
        from guardstream.workers.engines.gen_engine import GenEngine
        from guardstream.workers.engines.stream_engine import StreamEngine

        models = with_fixture_models(load_settings(gen_model=gen_model, stream_model=stream_model))
        console.print(f"judging {len(items)} items of {dataset.name} with {models.gen.model}")
        predictions = engines.judge(items, GenEngine(models.gen.model), batch_size, progress)
        if candidate:
            from guardstream.evaluation.compare import compare

            console.print(f"judging them again with the candidate {candidate}")
            compared = compare(items, predictions, engines.judge(items, GenEngine(candidate), batch_size, progress),
                               candidate, rounds)
        if marked(items):
            console.print(f"streaming {len(marked(items))} marked unsafe replies through {models.stream.model}")
            timeliness = measure(items, StreamEngine.from_pretrained(models.stream.model),
                                 AutoTokenizer.from_pretrained(models.stream.model), debounce, progress)
    else:
        from guardstream.client import Guard
        from guardstream.evaluation import pipeline
        from guardstream.wire.settings import GatewaySettings

        settings = load_settings(GatewaySettings, kafka_bootstrap=kafka_bootstrap)

        async def through_pipeline():
            async with Guard(bootstrap_or_fail(settings), settings, timeout_s) as guard:
                return await pipeline.judge(items, guard, tenant, concurrency, progress)

        console.print(f"judging {len(items)} items of {dataset.name} through the deployment at {settings.kafka.bootstrap}")
        predictions = asyncio.run(through_pipeline())
    judged = report(items, predictions, timeliness)
    if plot_into:
        for path in plot(items, predictions, plot_into, f"{dataset.name}{f' ({split})' if split else ''}"):
            console.print(f"wrote {path}")
    if as_json:
        out = dataclasses.asdict(judged)
        if compared:
            out["comparison"] = {**dataclasses.asdict(compared), "differences": [
                {**dataclasses.asdict(d), "significant": d.significant} for d in compared.differences]}
        click.echo(json.dumps(out, indent=2))
    else:
        for table in tables(judged, f"{dataset.name}{f' ({split})' if split else ''}, through the {through}") + \
                (comparison_tables(compared, models.gen.model) if compared else []):
            print_table(table)


COMMANDS = (evaluate,)

"""`guardstream eval`: how well the guard judges a labelled set."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from guardstream.cli.common import console, gen_model_option, load_settings, print_table


@click.command("eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", help="only the items of this split (in files whose rows name one, like the fixture corpus)")
@gen_model_option
@click.option("--batch-size", type=int, default=8, show_default=True, help="items the engine judges at once")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON on stdout, instead of tables")
def evaluate(dataset: Path, split: str | None, gen_model: str | None, batch_size: int, as_json: bool) -> None:
    """Precision, recall and F1 (strict and loose, overall and per category), the confusion matrix,
    refusal accuracy and latency of Qwen3Guard-Gen on DATASET, judged directly on the engine.

    DATASET is JSONL: the project's labelled items (the fixture corpus's fields) or OpenAI's moderation
    release (docs/evaluation.md)."""
    from guardstream.dev.tiny_checkpoints import with_fixture_models
    from guardstream.evaluation import engines
    from guardstream.evaluation.dataset import DatasetError, load
    from guardstream.evaluation.metrics import report
    from guardstream.evaluation.tables import tables
    from guardstream.workers.engines.gen_engine import GenEngine

    try:
        items = load(dataset, split)
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None
    model = with_fixture_models(load_settings(gen_model=gen_model)).gen.model
    console.print(f"judging {len(items)} items of {dataset.name} with {model}")

    def progress(done: int, total: int) -> None:
        if done == total or done // batch_size % 10 == 0:
            console.print(f"  {done}/{total} judged")

    judged = report(items, engines.judge(items, GenEngine(model), batch_size, progress))
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(judged), indent=2))
    else:
        for table in tables(judged, f"{dataset.name}{f' ({split})' if split else ''}"):
            print_table(table)


COMMANDS = (evaluate,)

"""`guardstream eval`: how well the guard judges a labelled set."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import click

from guardstream.cli.common import (bootstrap_option, bootstrap_or_fail, console, gen_model_option, load_settings,
                                    print_table, stream_model_option)
from guardstream.workers.moderation.language import DETECTED


@click.command("eval")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--split", help="only the items of this split (in files whose rows name one, like the fixture corpus)")
@click.option("--through", type=click.Choice(["engines", "pipeline"]), default="engines", show_default=True,
              help="engines: on a Gen engine in this process, offline; pipeline: through a running deployment, "
                   "as a gateway sends (broker, agents, pool)")
@gen_model_option
@stream_model_option
@click.option("--device", help="engines: where the models run (cpu, cuda, cuda:1); default GUARDSTREAM_DEVICE, or cpu")
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
@click.option("--calibrate", is_flag=True,
              help="pick the policy's unsafe_threshold that meets --target-precision or --target-recall on a "
                   "calibration split, and report it on the held-out items")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True), help="--calibrate: the precision to meet")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), help="--calibrate: the recall to meet")
@click.option("--calibrate-on", metavar="SPLIT",
              help="--calibrate: the split to calibrate on (the report is of --split); without it, the items are cut "
                   "in two by a hash of their ids, one half to calibrate on and the other reported")
@click.option("--mode", type=click.Choice(["strict", "loose"]), default="strict", show_default=True,
              help="--calibrate: whether Controversial counts as unsafe, in the labels and the probability")
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path),
              help="--calibrate: write the threshold as a tenant's policy, for `guardstream policy set`")
@click.option("--languages", default=",".join(DETECTED), show_default=True,
              help="the languages the detector tells apart for items that name none (ISO 639-1, as a worker's "
                   "GUARDSTREAM_LANGUAGES), for the per-language scores; none: such items are `unknown`")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON on stdout, instead of tables")
def evaluate(dataset: Path, split: str | None, through: str, gen_model: str | None, stream_model: str | None,
             device: str | None, batch_size: int, debounce: int, kafka_bootstrap: str | None, tenant: str, timeout_s: float,
             concurrency: int, candidate: str | None, rounds: int, plot_into: Path | None, calibrate: bool,
             target_precision: float | None, target_recall: float | None, calibrate_on: str | None, mode: str,
             write_to: Path | None, languages: str, as_json: bool) -> None:
    """Precision, recall and F1 (strict and loose, overall and per category), the confusion matrix,
    refusal accuracy and latency of Qwen3Guard-Gen on DATASET, overall and per language; and how
    early Qwen3Guard-Stream stops the unsafe replies whose unsafe text is marked (`unsafe_from`).

    DATASET is JSONL: the project's labelled items (the fixture corpus's fields) or OpenAI's moderation
    release (docs/evaluation.md). With --compare MODEL, a candidate is judged beside the main model
    on the same items: the offline twin of the canary. With --calibrate, the threshold on the unsafe
    probability that meets a target precision or recall is picked on a calibration split and
    reported on held-out items."""
    from guardstream.evaluation.metrics import report
    from guardstream.evaluation.tables import tables

    if candidate and through != "engines":
        raise click.UsageError("--compare runs on the engines: both models judge the same items in this process")
    if calibrate and (target_precision is None) == (target_recall is None):
        raise click.UsageError("--calibrate needs one target: --target-precision P or --target-recall R")
    if plot_into:
        from guardstream.evaluation.plots import plot, pyplot
        try:
            pyplot()  # before a long run, not after it
        except RuntimeError as exc:
            raise click.UsageError(str(exc)) from None
    calibration_items, items = labelled(dataset, split, calibrate, calibrate_on)
    of = f"split {split}" if split else "the items"
    calibrated_on, reported_on = (f"split {calibrate_on}", of) if calibrate_on else (f"half of {of}", f"the other half of {of}")
    title = f"{dataset.name}, {reported_on if calibrate else of}"
    if through == "engines":
        models = fixture_or(gen_model, stream_model, **({"device": device} if device else {}))
        judge = OnEngines(models, batch_size, debounce)
    else:
        judge = ThroughDeployment(kafka_bootstrap, timeout_s, tenant, concurrency, stream_model)
    console.print(f"judging {len(calibration_items) + len(items)} items of {dataset.name}")
    predictions = judge(calibration_items + items)  # one run judges both; the report is of `items`
    calibration_predictions, predictions = predictions[:len(calibration_items)], predictions[len(calibration_items):]

    timeliness = judge.timeliness(items)
    item_languages = told(items, languages)
    judged = report(items, predictions, timeliness, item_languages)
    out, shown = dataclasses.asdict(judged), tables(judged, f"{title}, through the {through}")
    if candidate:
        from guardstream.evaluation.compare import compare
        from guardstream.evaluation.tables import comparison_tables

        console.print(f"judging them again with the candidate {candidate}")
        theirs = OnEngines(models.model_copy(update={"gen": models.gen.model_copy(update={"model": candidate})}), batch_size)
        compared = compare(items, predictions, theirs(items), candidate, rounds)
        out["comparison"] = {**dataclasses.asdict(compared), "differences": [
            {**dataclasses.asdict(d), "significant": d.significant} for d in compared.differences]}
        shown += comparison_tables(compared, models.gen.model)
    calibrated = None
    if calibrate:
        from guardstream.evaluation.calibration import calibrate as fit
        from guardstream.evaluation.tables import calibration_table, language_calibration_table

        target, goal = ("precision", target_precision) if target_precision is not None else ("recall", target_recall)
        calibrated = fit((calibration_items, calibration_predictions), (items, predictions), mode, target, goal,
                         (told(calibration_items, languages), item_languages))
        out["calibration"] = {**dataclasses.asdict(calibrated), "fragment": calibrated.fragment()}
        shown.append(calibration_table(calibrated, calibrated_on, reported_on))
        if calibrated.languages:
            shown.append(language_calibration_table(calibrated))
        if write_to and calibrated.threshold is not None:
            write_to.write_text(json.dumps(calibrated.fragment(), indent=2) + "\n")
    if plot_into:
        for path in plot(items, predictions, plot_into, title):
            console.print(f"wrote {path}")
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        for table in shown:
            print_table(table)
    if calibrated and calibrated.threshold is None:
        raise click.ClickException(f"no threshold reaches {target} {goal} on the calibration split: nothing written")
    if calibrated and write_to:
        console.print(f"wrote {write_to}: try it with `guardstream policy set TENANT {write_to}` (merged into the "
                      f"tenant's policy, `guardstream policy show TENANT`)")


def labelled(dataset: Path, split: str | None, calibrate: bool, calibrate_on: str | None):
    """The items to calibrate on (none without --calibrate) and the items reported."""
    from guardstream.evaluation.calibration import halves
    from guardstream.evaluation.dataset import DatasetError, load

    try:
        items = load(dataset, split)
        if calibrate and calibrate_on:
            return load(dataset, calibrate_on), items
    except DatasetError as exc:
        raise click.UsageError(str(exc)) from None
    return halves(items) if calibrate else ([], items)


def told(items, languages: str) -> list[str | None]:
    """Each item's language: its own, else as a worker with GUARDSTREAM_LANGUAGES=`languages` tells it."""
    from guardstream.evaluation.dataset import languages as told_by
    from guardstream.workers.moderation.language import loaded_detector

    codes = () if languages == "none" else tuple(c.strip() for c in languages.split(",") if c.strip())
    needed = codes and any(i.language is None for i in items)
    try:
        return told_by(items, loaded_detector(codes) if needed else None)
    except ValueError as exc:
        raise click.UsageError(f"--languages: {exc}") from None


def progress(done: int, total: int) -> None:
    if done == total or done % 100 == 0:
        console.print(f"  {done}/{total} judged")


def fixture_or(gen_model: str | None, stream_model: str | None, **overrides: str):
    """The worker's settings for the models given (their device and dtype as GUARDSTREAM_* and
    `overrides` say), the test fixture's where none is."""
    from guardstream.dev.tiny_checkpoints import with_fixture_models

    return with_fixture_models(load_settings(gen_model=gen_model, stream_model=stream_model, **overrides))


class OnEngines:
    """Judging on a Gen engine in this process; the marked replies on a Stream engine (the models,
    devices and dtypes of `models`, a worker's settings)."""

    def __init__(self, models, batch_size: int, debounce: int = 2):
        from guardstream.workers.engines.gen_engine import GenEngine

        self.engine = GenEngine(models.gen.model, device=models.gen.device, dtype=models.gen.dtype)
        self.batch_size, self.stream, self.debounce = batch_size, models.stream, debounce

    def __call__(self, items):
        from guardstream.evaluation import engines

        return engines.judge(items, self.engine, self.batch_size, progress)

    def timeliness(self, items):
        """The marked unsafe replies' timeliness (None: there is none)."""
        import torch
        from transformers import AutoTokenizer

        from guardstream.evaluation.timeliness import engine_stops, marked, summary
        from guardstream.workers.engines.stream_engine import StreamEngine

        if not (replies := marked(items)):
            return None
        console.print(f"streaming {len(replies)} marked unsafe replies through {self.stream.model}")
        tokenizer = AutoTokenizer.from_pretrained(self.stream.model)
        engine = StreamEngine.from_pretrained(self.stream.model, device=self.stream.device, dtype=getattr(torch, self.stream.dtype))
        stops = engine_stops(replies, engine, tokenizer, self.debounce, progress)
        return summary(replies, stops, tokenizer)


class ThroughDeployment:
    """Judging through a running deployment, as a gateway sends and streams (the replies' token ids
    from `stream_model`'s tokenizer, the deployment's Stream model's; the fixture's where none is
    given, whose vocabulary is Qwen3's)."""

    def __init__(self, kafka_bootstrap: str | None, timeout_s: float, tenant: str, concurrency: int,
                 stream_model: str | None):
        from guardstream.wire.settings import GatewaySettings

        self.settings = load_settings(GatewaySettings, kafka_bootstrap=kafka_bootstrap)
        self.bootstrap = bootstrap_or_fail(self.settings)
        self.timeout_s, self.tenant, self.concurrency, self.stream_model = timeout_s, tenant, concurrency, stream_model

    def __call__(self, items):
        from guardstream.evaluation import pipeline

        return self._with_guard(lambda guard: pipeline.judge(items, guard, self.tenant, self.concurrency, progress))

    def timeliness(self, items):
        from transformers import AutoTokenizer

        from guardstream.evaluation import pipeline
        from guardstream.evaluation.timeliness import marked, summary

        if not (replies := marked(items)):
            return None
        console.print(f"streaming {len(replies)} marked unsafe replies through the deployment")
        tokenizer = AutoTokenizer.from_pretrained(self.stream_model or fixture_or(None, None).stream.model)
        stops = self._with_guard(lambda guard: pipeline.stream_stops(replies, guard, tokenizer, self.tenant,
                                                                     self.concurrency, progress))
        return summary(replies, stops, tokenizer)

    def _with_guard(self, ask):
        from guardstream.client import Guard

        async def asked():
            async with Guard(self.bootstrap, self.settings, self.timeout_s) as guard:
                return await ask(guard)

        return asyncio.run(asked())


COMMANDS = (evaluate,)

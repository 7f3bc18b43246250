"""A report as tables a safety lead can read."""

from __future__ import annotations

from rich.table import Table

from guardstream.evaluation.calibration import ENOUGH, Calibration
from guardstream.evaluation.compare import Comparison
from guardstream.evaluation.metrics import MODES, TIERS, Report

SHOWN_DISAGREEMENTS = 20


def tables(report: Report, title: str) -> list[Table]:
    overall = Table(title=f"{title}: {report.items} items, {report.errors} errors (counted as not flagged)")
    for column in ("mode", "precision", "recall", "F1", "unsafe items"):
        overall.add_column(column, justify="left" if column == "mode" else "right")
    for mode, s in report.overall.items():
        overall.add_row(mode, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support))

    by_category = Table(title="per category (precision/recall/F1; support: unsafe items labelled with it)")
    by_category.add_column("category")
    for mode in MODES:
        by_category.add_column(f"{mode} P/R/F1", justify="right")
        by_category.add_column(f"{mode} support", justify="right")
    for category in report.categories["strict"]:
        row = [category]
        for mode in MODES:
            s = report.categories[mode][category]
            row += [f"{s.precision:.2f}/{s.recall:.2f}/{s.f1:.2f}", str(s.support)]
        by_category.add_row(*row)

    confusion = Table(title="labelled (rows) against predicted (columns)")
    confusion.add_column("labelled")
    predicted = (*TIERS, "Error")
    for tier in predicted:
        confusion.add_column(tier, justify="right")
    for tier in TIERS:
        confusion.add_row(tier, *(str(report.confusion[tier][p]) for p in predicted))

    other = Table(title="refusal and latency")
    for column in ("refusal accuracy (responses)", "latency p50 ms", "latency p99 ms"):
        other.add_column(column, justify="right")
    refusal = "no labelled response" if report.refusal_accuracy is None else \
        f"{report.refusal_accuracy:.3f} of {report.refusal_items}"
    other.add_row(refusal, f"{report.latency_p50_ms:.1f}", f"{report.latency_p99_ms:.1f}")
    shown = [overall, by_category, confusion, other]
    if report.languages:
        by_language = Table(title="per language (the item's own, else as the worker's detector tells it)")
        for column in ("language", "items", "strict P/R/F1", "loose P/R/F1"):
            by_language.add_column(column, justify="left" if column == "language" else "right")
        for language, group in report.languages.items():
            by_language.add_row(language, str(group.items),
                                *(f"{s.precision:.2f}/{s.recall:.2f}/{s.f1:.2f}" for s in group.overall.values()))
        shown.append(by_language)
    if report.timeliness is None:
        return shown
    t = report.timeliness
    timely = Table(title=f"reply streams: the first stop against the first unsafe token ({t.streams} marked replies)")
    for column in ("stopped", "replies", "share"):
        timely.add_column(column, justify="left" if column == "stopped" else "right")
    for bucket, count in t.buckets.items():
        timely.add_row(bucket, str(count), f"{count / t.streams:.3f}" if t.streams else "-")
    return shown + [timely]


def comparison_tables(comparison: Comparison, main: str) -> list[Table]:
    differences = Table(title=f"{comparison.candidate} against {main}: candidate minus main, "
                              f"{comparison.confidence:.0%} paired bootstrap interval ({comparison.rounds} resamples)")
    for column in ("metric", "main", "candidate", "difference", "interval", "differs"):
        differences.add_column(column, justify="left" if column in ("metric", "differs") else "right")
    for d in comparison.differences:
        differences.add_row(d.metric, f"{d.main:.3f}", f"{d.candidate:.3f}", f"{d.delta:+.3f}",
                            f"[{d.low:+.3f}, {d.high:+.3f}]", "yes" if d.significant else "no: the interval holds 0")
    shown = comparison.disagreements[:SHOWN_DISAGREEMENTS]
    disagreements = Table(title=f"{len(comparison.disagreements)} items judged differently"
                                f"{f' (the first {len(shown)}; --json lists all)' if len(shown) < len(comparison.disagreements) else ''}")
    for column in ("item", "labelled", "main", "candidate"):
        disagreements.add_column(column)
    for d in shown:
        disagreements.add_row(d.id, d.label, d.main, d.candidate)
    return [differences, disagreements]


def calibration_table(c: Calibration, calibrated_on: str, reported_on: str) -> Table:
    goal = f"{c.target} at least {c.goal:g}, {c.mode}"
    if c.threshold is None:
        table = Table(title=f"calibration for {goal}: no threshold reaches it on {calibrated_on} "
                            f"({c.calibration_items} items)")
        table.add_column("by the labels, on " + reported_on)
        table.add_row(f"precision {c.heldout_by_labels.precision:.3f}, recall {c.heldout_by_labels.recall:.3f}")
        return table
    table = Table(title=f"calibration for {goal}: unsafe_threshold {c.threshold:.4g} "
                        f"(the unsafe probability from which a verdict counts as unsafe)")
    for column in ("", "items", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if not column else "right")
    for name, n, s in ((f"threshold, on {calibrated_on} (fitted there)", c.calibration_items, c.on_calibration),
                       (f"threshold, on {reported_on} (what to expect)", c.heldout_items, c.on_heldout),
                       (f"the model's labels, on {reported_on}", c.heldout_items, c.heldout_by_labels)):
        table.add_row(name, str(n), f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}")
    return table


def language_calibration_table(c: Calibration) -> Table:
    table = Table(title=f"per language with at least {ENOUGH} safe and {ENOUGH} unsafe items to calibrate on: its own "
                        f"threshold (precision/recall)")
    for column in ("language", "threshold", "items (fitted, reported)", "fitted there", "what to expect",
                   "the model's labels"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for language, own in c.languages.items():
        pr = [f"{s.precision:.3f}/{s.recall:.3f}" if s else "-" for s in (own.on_calibration, own.on_heldout,
                                                                          own.heldout_by_labels)]
        table.add_row(language, "not reached" if own.threshold is None else f"{own.threshold:.4g}",
                      f"{own.calibration_items}, {own.heldout_items}", *pr)
    return table

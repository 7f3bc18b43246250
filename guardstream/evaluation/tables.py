"""A report as tables a safety lead can read."""

from __future__ import annotations

from rich.table import Table

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
    if report.timeliness is None:
        return [overall, by_category, confusion, other]
    t = report.timeliness
    timely = Table(title=f"reply streams: the first stop against the first unsafe token ({t.streams} marked replies)")
    for column in ("stopped", "replies", "share"):
        timely.add_column(column, justify="left" if column == "stopped" else "right")
    for bucket, count in t.buckets.items():
        timely.add_row(bucket, str(count), f"{count / t.streams:.3f}" if t.streams else "-")
    return [overall, by_category, confusion, other, timely]


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

"""`guardstream canary`: how the canary model agrees with the main one."""

from __future__ import annotations

import asyncio
import json

import click

from guardstream.cli.common import bootstrap_option, bootstrap_or_fail, console, load_settings


@click.group()
def canary() -> None:
    """The canary model (GUARDSTREAM_CANARY) against the main one, on the traffic it samples."""


@canary.command("report")
@click.option("--tenant", help="only this tenant's pairs")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@bootstrap_option
def canary_report(tenant: str | None, as_json: bool, kafka_bootstrap: str | None) -> None:
    """Agreement of the canary with the main model, read from the canary topic: risk levels (the
    confusion matrix, main model in rows), categories, and where streams were stopped."""
    from guardstream.kafka_io import canary_records
    from guardstream.workers.moderation.canary import CanaryReport

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    found, unreadable = asyncio.run(canary_records(settings, bootstrap_or_fail(settings)))
    report = CanaryReport(r for r in found if tenant is None or r.tenant == tenant)
    if unreadable:
        console.print(f"[yellow]{unreadable} records of the canary topic could not be read as canary records; left out[/]")
    if as_json:
        click.echo(json.dumps(report.summary()))
    else:
        for line in report.lines():
            click.echo(line)


COMMANDS = (canary,)

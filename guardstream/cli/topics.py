"""Commands on the topics themselves: produce events, tail a topic, export the wire contract."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from guardstream.cli.common import bootstrap_option, bootstrap_or_fail, console, load_settings


@click.command()
@click.argument("events_file", type=click.Path(exists=True, path_type=Path))
@bootstrap_option
@click.option("--topic", "role", type=click.Choice(["conversations", "chunks"]), default="conversations", show_default=True)
def produce(events_file: Path, kafka_bootstrap: str | None, role: str) -> None:
    """Produce JSONL events, keyed by conversation_id (lines are sent as they are, valid or not)."""
    from guardstream.kafka_io import produce_lines

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    lines = [line for line in events_file.read_text().splitlines() if line.strip()]
    sent = asyncio.run(produce_lines(settings, bootstrap_or_fail(settings), role, lines))
    console.print(f"produced {sent} events to {settings.kafka.topic_prefix}{role}")


@click.command()
@click.argument("role", type=click.Choice(["verdicts", "actions", "analytics", "dlq", "conversations", "chunks"]))
@bootstrap_option
@click.option("--limit", type=int, default=None, help="stop after this many records")
@click.option("--json", "as_json", is_flag=True, help="print raw JSON lines instead of a table")
def tail(role: str, kafka_bootstrap: str | None, limit: int | None, as_json: bool) -> None:
    """Follow a topic from the beginning, as a table or as JSON lines."""
    from guardstream.kafka_io import tail_topic

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    asyncio.run(tail_topic(settings, bootstrap_or_fail(settings), role, limit, as_json))


@click.group()
def schemas() -> None:
    """The wire contract."""


@schemas.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write the JSON Schema of every event to DIRECTORY."""
    from guardstream.schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))


COMMANDS = (produce, tail, schemas)

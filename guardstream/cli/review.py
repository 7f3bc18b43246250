"""`guardstream review`: the review queue's decisions, as data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from guardstream.cli.common import console, load_settings


@click.group()
def review() -> None:
    """The review queue (docs/review.md): what reviewers decided."""


@review.command("export")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tenant", "tenants", multiple=True, help="only this tenant's decisions (repeatable)  [default: all]")
@click.option("--audit-url", help="the PostgreSQL database of the queue  [env GUARDSTREAM_AUDIT_URL]")
def review_export(out: Path, tenants: tuple[str, ...], audit_url: str | None) -> None:
    """Write every decided item as a labelled set (the project's JSONL) that `guardstream eval` reads.

    Upheld: the model's tier; overturned: the other side (flagged → Safe, allowed → Unsafe), with
    the reviewer's categories where given. Items without text (their tenant's policy keeps none)
    or judged Error cannot be labelled and are counted apart."""
    import psycopg

    from guardstream.evaluation.dataset import from_decision
    from guardstream.workers.sinks.audit import redact, scrub, tls
    from guardstream.workers.sinks.review import ReviewStore

    settings = load_settings()
    url = audit_url or settings.sinks.audit_url
    if not url or not url.startswith(("postgresql://", "postgres://")):
        raise click.ClickException("the review queue is in PostgreSQL: give --audit-url postgresql://... "
                                   "(or GUARDSTREAM_AUDIT_URL), the workers' audit database")

    async def decided() -> list[dict]:
        store = ReviewStore(url, **tls(url, settings.sinks.audit_ca_file))
        try:
            return await store.decided(list(tenants) or None)
        finally:
            await store.close()

    try:
        items = asyncio.run(decided())
    except (OSError, psycopg.Error) as exc:
        raise click.ClickException(f"{redact(url)[0]}: {scrub(str(exc), redact(url)[1])}") from None
    labelled = [row for row in map(from_decision, items) if row is not None]
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in labelled))
    without_text = sum(item["conversation"] is None for item in items)
    on_errors = len(items) - len(labelled) - without_text
    console.print(f"wrote {len(labelled)} labelled items to {out} from {len(items)} decisions; {without_text} "
                  f"without text (their tenants' policies keep none), {on_errors} on Error verdicts. Judge them with "
                  f"`guardstream eval {out}`")


COMMANDS = [review]

"""`guardstream review`: the review queue's decisions, as data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from guardstream.cli.common import bootstrap_option, bootstrap_or_fail, console, load_settings


@click.group()
def review() -> None:
    """The review queue (docs/review.md): what reviewers decided."""


def review_store(url: str | None, ca_file):
    """The queue in the audit database, or a usage error saying where it is."""
    from guardstream.workers.sinks.review import open_review_store

    store = open_review_store(url, ca_file)
    if store is None:
        raise click.UsageError("the review queue is in PostgreSQL: give --audit-url postgresql://... "
                               "(or GUARDSTREAM_AUDIT_URL), the workers' audit database")
    return store


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
    from guardstream.workers.sinks.audit import redact, scrub

    settings = load_settings()
    url = audit_url or settings.sinks.audit_url
    store = review_store(url, settings.sinks.audit_ca_file)

    async def decided() -> list[dict]:
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


@review.command("serve")
@bootstrap_option
@click.option("--host", default=None, help="the address it listens on [default 127.0.0.1; env GUARDSTREAM_REVIEW_HOST]")
@click.option("--port", type=int, default=None, help="its port [default 8090; env GUARDSTREAM_REVIEW_PORT]")
@click.option("--keys", default=None, help="the reviewer keys, as JSON or a JSON file path (`guardstream keys new "
              "--review`) [env GUARDSTREAM_REVIEW_KEYS]")
@click.option("--audit-url", help="the PostgreSQL database of the queue  [env GUARDSTREAM_AUDIT_URL]")
def review_serve(kafka_bootstrap: str | None, host: str | None, port: int | None, keys: str | None,
                 audit_url: str | None) -> None:
    """The review console: reviewers sign in with their key and work their tenants' queue in a browser."""
    import ipaddress
    import secrets

    import uvicorn

    from guardstream.callers import ApiKeys
    from guardstream.console.app import create_console
    from guardstream.console.outbox import DecisionOutbox
    from guardstream.console.settings import ConsoleSettings
    settings = load_settings(ConsoleSettings, kafka_bootstrap=kafka_bootstrap, review_host=host, review_port=port,
                             review_keys=keys, audit_url=audit_url)
    c, url = settings.console, settings.sinks.audit_url
    bootstrap = bootstrap_or_fail(settings)
    store = review_store(url, settings.sinks.audit_ca_file)
    if not c.keys:
        raise click.UsageError("no reviewer keys: make one with `guardstream keys new --review --tenant T --name NAME` "
                               "and pass the file with --keys (or GUARDSTREAM_REVIEW_KEYS)")
    try:
        reviewer_keys = ApiKeys.from_source(c.keys)
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--keys: {exc}") from None
    if c.session_secret is None:
        console.print("[yellow]no GUARDSTREAM_REVIEW_SESSION_SECRET: sessions are signed with a random secret of this "
                      "process, so they end when it does and other replicas do not know them[/yellow]")
    try:
        loopback = ipaddress.ip_address(c.host).is_loopback
    except ValueError:
        loopback = c.host == "localhost"
    app = create_console(store, DecisionOutbox(store, settings, bootstrap), reviewer_keys,
                         (c.session_secret.get_secret_value().encode() if c.session_secret else secrets.token_bytes(32)),
                         session_hours=c.session_hours, lease_s=c.lease_s,
                         secure_cookie=c.secure_cookie if c.secure_cookie is not None else not loopback)
    console.print(f"review console on http://{c.host}:{c.port} for {len(reviewer_keys.keys)} reviewer keys")
    uvicorn.run(app, host=c.host, port=c.port, log_level="info", timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024)


COMMANDS = [review]

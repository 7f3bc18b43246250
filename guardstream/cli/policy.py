"""`guardstream policy`: tenants' policies on the policies topic."""

from __future__ import annotations

import asyncio
import json
import os

import click

from guardstream.cli.common import bootstrap_option, bootstrap_or_fail, console, fatal_as_message, load_settings


@click.group()
def policy() -> None:
    """Tenants' policies on the policies topic: every worker, client and `serve` follows it, no restart needed."""


@policy.command("set")
@click.argument("tenant")
@click.argument("document", type=click.File("r"))
@click.option("--by", "set_by", default=lambda: os.environ.get("USER") or "cli", help="who sets it  [default: $USER]")
@bootstrap_option
def policy_set(tenant: str, document, set_by: str, kafka_bootstrap: str | None) -> None:
    """Set TENANT's policy (`default`: every tenant no entry names) from DOCUMENT, a JSON file or - for stdin.

    The document is one tenant's policy, e.g. {"mode": "observe", "category_actions": {"PII": "review"}};
    it is checked before it is sent, and becomes the tenant's next version."""
    from guardstream.kafka_io import PolicyConflict, set_policy

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    try:
        parsed = json.loads(document.read())
        with fatal_as_message():
            version = asyncio.run(set_policy(settings, bootstrap_or_fail(settings), tenant, parsed, set_by))
    except ValueError as exc:  # JSON and validation errors alike
        raise click.ClickException(f"policy for {tenant} refused, nothing was sent: {exc}") from None
    except PolicyConflict as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"policy of [bold]{tenant}[/] is now version {version} (set by {set_by})")


@policy.command("show")
@click.argument("tenant", required=False)
@bootstrap_option
def policy_show(tenant: str | None, kafka_bootstrap: str | None) -> None:
    """The policy in force for TENANT, or for every tenant named (GUARDSTREAM_POLICY, then the topic over it)."""
    from guardstream.kafka_io import policy_history

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    in_force, _ = asyncio.run(policy_history(settings, bootstrap_or_fail(settings)))
    named = [tenant] if tenant else sorted({"default", *in_force.document.tenants, *in_force.set_versions()})
    for name in named:
        console.print_json(json.dumps({"tenant": name, "version": in_force.version(name),
                                       "policy": in_force.for_tenant(name).model_dump(mode="json")}))


@policy.command("history")
@click.argument("tenant")
@bootstrap_option
def policy_history_command(tenant: str, kafka_bootstrap: str | None) -> None:
    """TENANT's records on the policies topic, oldest first (what compaction has kept), refused ones too."""
    from guardstream.kafka_io import policy_history

    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    _, history = asyncio.run(policy_history(settings, bootstrap_or_fail(settings)))
    for offset, key, what in history:
        if key.split("/", 1)[0] == tenant:
            click.echo(f"@{offset} {key}: {what}")


COMMANDS = (policy,)

"""Who may do what: Kafka ACLs of each role, and API keys for `serve`."""

from __future__ import annotations

import click

from guardstream.cli.common import console, load_settings


@click.command()
@click.option("--format", "form", type=click.Choice(["kafka-acls", "strimzi"]), default="kafka-acls", show_default=True)
@click.option("--user", "users", multiple=True, metavar="ROLE=NAME",
              help="the user name of a role (worker, gateway, sink, policy-admin, reviewer); default: guardstream-ROLE")
@click.option("--cluster", default="my-cluster", show_default=True, help="the Strimzi Kafka cluster's name")
def acls(form: str, users: tuple[str, ...], cluster: str) -> None:
    """The Kafka ACLs of each role, for the topic prefix and app id in the settings: `kafka-acls.sh`
    commands, or Strimzi KafkaUser resources (SCRAM-SHA-512)."""
    import yaml

    from guardstream.topology.acls import kafka_acls_lines, role_users, strimzi_users

    try:
        named = role_users(users)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = load_settings()
    if form == "strimzi":
        click.echo(yaml.safe_dump_all(strimzi_users(settings, named, cluster), sort_keys=False), nl=False)
        return
    for line in kafka_acls_lines(settings, {role: f"User:{name}" for role, name in named.items()}):
        click.echo(line)


@click.group()
def keys() -> None:
    """API keys for `guardstream serve`, and reviewer keys for `guardstream review serve`."""


@keys.command("new")
@click.option("--tenant", "tenants", multiple=True, required=True, help="a tenant the key may act for (repeat for more; "
              "the first is its default)")
@click.option("--name", default=None, help="the key's name in logs and limits, and a reviewer's in decisions "
              "(default: the first tenant)")
@click.option("--review", is_flag=True, help="a reviewer key for the review console (GUARDSTREAM_REVIEW_KEYS), "
              "which may review the tenants given")
def keys_new(tenants: tuple[str, ...], name: str | None, review: bool) -> None:
    """Print a fresh key (shown only now) and the entry for GUARDSTREAM_API_KEYS (or, with --review,
    GUARDSTREAM_REVIEW_KEYS), which keeps its hash only."""
    from pydantic import ValidationError

    from guardstream.callers import REVIEW_KEY_PREFIX, new_key

    if review and name is None:
        raise click.UsageError("a reviewer key needs --name: the reviewer's name, which their decisions carry")
    try:
        key, entry = new_key(name or tenants[0], list(tenants), REVIEW_KEY_PREFIX if review else None)
    except ValidationError as exc:
        raise click.UsageError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    console.print(f"key (give it to the {'reviewer' if review else 'caller'}; it is not stored anywhere): [bold]{key}[/bold]")
    console.print(f'add this entry to the "keys" list of {"GUARDSTREAM_REVIEW_KEYS" if review else "GUARDSTREAM_API_KEYS"}:')
    click.echo(entry.model_dump_json(exclude_none=True))


COMMANDS = (acls, keys)

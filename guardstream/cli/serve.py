"""`guardstream serve`: the OpenAI-compatible moderation endpoint."""

from __future__ import annotations

import click

from guardstream.callers import Limits
from guardstream.cli.common import bootstrap_option, bootstrap_or_fail, load_settings, parsed_policy
from guardstream.wire.settings import GatewaySettings


@click.command()
@bootstrap_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--api-keys", "api_keys_source", envvar="GUARDSTREAM_API_KEYS",
              help="the keys callers must send, as JSON or a JSON file path (`guardstream keys new`) [env GUARDSTREAM_API_KEYS]")
@click.option("--insecure-no-auth", is_flag=True,
              help="serve without keys, on a loopback --host only; X-Guardstream-Tenant then picks any tenant")
@click.option("--tenant", default="default", show_default=True, help="with --insecure-no-auth: the tenant of requests "
              "without X-Guardstream-Tenant (with keys, it is the key's first tenant)")
@click.option("--timeout", "timeout_s", type=float, default=5, show_default=True,
              help="seconds to wait for a verdict before the tenant's fail mode answers")
@click.option("--max-body-bytes", type=int, default=Limits.max_body_bytes, show_default=True)
@click.option("--rate", default=Limits.rate, show_default=True, help="requests per key, unless its entry says otherwise")
@click.option("--concurrency", type=int, default=Limits.concurrency, show_default=True,
              help="requests in flight per key, unless its entry says otherwise")
@click.option("--max-connections", type=int, default=1024, show_default=True,
              help="connections and requests at once of callers whose request is in (then 503)")
@click.option("--unproven-connections", type=int, default=Limits.unproven_connections, show_default=True,
              help="connections whose request is not yet in, apart from --max-connections (past it the oldest is "
                   "closed); each has 10 s to send its request line and headers")
@click.option("--policy", "policy_source", help="the workers' policy (for the fail modes) [env GUARDSTREAM_POLICY]")
@click.option("--reply-partition", type=int, help="the partition of the replies topic this process alone reads its "
                                                  "verdicts from; default: one of its own, claimed in the gateways' group "
                                                  "[env GUARDSTREAM_REPLY_PARTITION]")
def serve(kafka_bootstrap: str | None, host: str, port: int, api_keys_source: str | None, insecure_no_auth: bool,
          tenant: str, timeout_s: float, max_body_bytes: int, rate: str, concurrency: int, max_connections: int,
          unproven_connections: int, policy_source: str | None, reply_partition: int | None) -> None:
    """An OpenAI-compatible POST /v1/moderations, answered by the workers over Kafka."""
    from guardstream.client import Guard
    from guardstream.serve import caller_keys, create_api, serve_api

    try:
        keys = caller_keys(api_keys_source, insecure_no_auth, host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = load_settings(GatewaySettings, policy=parsed_policy(policy_source), kafka_bootstrap=kafka_bootstrap,
                             reply_partition=reply_partition)
    limits = Limits(max_body_bytes=max_body_bytes, rate=rate, concurrency=concurrency,
                    unproven_connections=unproven_connections)
    try:
        guard = Guard(bootstrap_or_fail(settings), settings, timeout_s)
    except ValueError as exc:
        raise click.UsageError(f"--reply-partition: {exc}") from None
    serve_api(create_api(guard, keys, timeout_s, limits, tenant), host, port, limits, max_connections)


COMMANDS = (serve,)

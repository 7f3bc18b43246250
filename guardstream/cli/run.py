"""Commands that run the parts: a worker, the model pool, a broker, all of them at once, the demo."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from guardstream import EXAMPLES
from guardstream.cli.common import (bootstrap_option, bootstrap_or_fail, console, fatal_as_message,
                                    gen_model_option, load_settings, loglevel_option, metrics_port_option,
                                    models_options, parsed_policy, policy_option, ray_address_option, with_options)
from guardstream.signals import exit_on_signals, leave_if_signalled
from guardstream.topology.settings import Settings

worker_options = with_options(
    bootstrap_option,
    ray_address_option,
    models_options,
    click.option("--agents", help="agents this worker runs, comma-separated: gen,stream,enforcement,audit,review,"
                                  "analytics,canary (default: all; canary runs only with GUARDSTREAM_CANARY set) "
                                  "[env GUARDSTREAM_AGENTS]"),
    click.option("--device", help="torch device for the actors (cpu, cuda)"),
    policy_option,
    click.option("--audit-url", help="postgresql://... or sqlite:///path [env GUARDSTREAM_AUDIT_URL]"),
    metrics_port_option,
    loglevel_option,
)


def worker_settings(policy_source: str | None, **flags) -> Settings:
    settings = load_settings(policy=parsed_policy(policy_source), **flags)
    if not settings.creates_models:
        return settings
    from guardstream.dev.tiny_checkpoints import with_fixture_models

    return with_fixture_models(settings)


@click.command()
@worker_options
def worker(loglevel: str, policy_source: str | None, **flags) -> None:
    """Run a Faust worker against an existing Kafka."""
    from guardstream.runtime import run_worker

    settings = worker_settings(policy_source, **flags)
    with fatal_as_message():
        run_worker(settings, bootstrap_or_fail(settings), loglevel)


@click.command()
@worker_options
def up(loglevel: str, policy_source: str | None, **flags) -> None:
    """Broker (unless GUARDSTREAM_KAFKA_BOOTSTRAP is set), local Ray and a worker, in one command."""
    from guardstream.dev.local import run_up

    settings = worker_settings(policy_source, **flags)
    exit_on_signals()  # until the worker installs its own handlers: the broker is still stopped
    run_up(settings, loglevel, lambda bootstrap: console.print(f"[green]embedded broker[/] on [bold]{bootstrap}[/]"))


@click.command()
@click.option("--ray-address", help="the Ray cluster to run the pool on [env GUARDSTREAM_RAY_ADDRESS]")
@click.option("--app-id", help="the app whose workers use this pool [env GUARDSTREAM_APP_ID]")
@models_options
@click.option("--device", help="torch device of the Gen actors, and of the Stream actors unless "
                               "GUARDSTREAM_STREAM_DEVICE is set")
@metrics_port_option
@click.option("--down", is_flag=True, help="remove the app's pool from the Ray cluster and exit")
@loglevel_option
def pool(loglevel: str, down: bool, **flags) -> None:
    """Create the app's model pool on a Ray cluster and watch it; workers with pool=join use it.

    CPUs, GPUs and dtype per actor come from GUARDSTREAM_GEN_ACTOR_CPUS, _GEN_ACTOR_GPUS, _DTYPE,
    _STREAM_ACTOR_CPUS, _STREAM_ACTOR_GPUS, _STREAM_DTYPE and the other pool settings. Stopping this
    command leaves the actors running; a pool of other settings replaces the running one."""
    from guardstream.runtime import run_pool

    settings = load_settings(**flags)
    if not settings.pool.ray_address:
        raise click.UsageError("the pool runs on a Ray cluster of its own: pass --ray-address HOST:PORT or ray://HOST:10001 "
                               "(or set GUARDSTREAM_RAY_ADDRESS); a worker without one creates a local pool itself")
    if not down:
        from guardstream.dev.tiny_checkpoints import with_fixture_models

        settings = with_fixture_models(settings)
    with fatal_as_message():
        run_pool(settings, loglevel, down)


@click.command()
@click.option("--port", type=int, default=None, help="loopback port (the first node's); default: free ones")
@click.option("--kafka", is_flag=True, help="Apache Kafka (KRaft, from Maven Central; needs Java 17+ and Maven) "
                                            "instead of the embedded Tansu")
@click.option("--nodes", type=click.IntRange(1, 5), default=1, show_default=True, help="Kafka nodes (with --kafka)")
@click.option("--kafka-version", default=None, help="a pinned Kafka release (with --kafka); default: the newest 4.x")
def broker(port: int | None, kafka: bool, nodes: int, kafka_version: str | None) -> None:
    """Run a broker on loopback and create the topics: the embedded Tansu, or Apache Kafka with --kafka.

    Prints `node <id> port <port> pid <pid>` for each Kafka node, then `broker ready <bootstrap>`;
    SIGTERM or Ctrl-C stops every node."""
    from guardstream.dev.local import loopback_broker
    from guardstream.wire.topics import ensure_topics

    if nodes != 1 and not kafka:
        raise click.UsageError("--nodes goes with --kafka (the embedded broker is one process)")
    settings = load_settings()
    exit_on_signals()
    with fatal_as_message(), loopback_broker(port, kafka, nodes, kafka_version, console.print) as running:
        if kafka:
            for node in running.nodes:
                click.echo(f"node {node.node_id} port {node.port} pid {node.pid}")
            settings = settings.for_nodes(nodes)
        asyncio.run(ensure_topics(settings.kafka, running.bootstrap))
        click.echo(f"broker ready {running.bootstrap}")
        console.print(f"(export GUARDSTREAM_KAFKA_BOOTSTRAP={running.bootstrap}); Ctrl-C stops it")
        while True:  # a signal whose SystemExit was ignored before the pause ends it here, not at the next one
            leave_if_signalled()
            signal.pause()


@click.command()
@click.option("--events", "events_file", type=click.Path(exists=True, path_type=Path),
              default=EXAMPLES / "conversations.jsonl", show_default=True, help="JSONL of conversation events")
@gen_model_option
@click.option("--timeout", "timeout_s", type=float, default=300, show_default=True)
def demo(events_file: Path, gen_model: str | None, timeout_s: float) -> None:
    """Embedded broker + local Ray + a worker; moderate sample conversations and reply streams, live."""
    from guardstream.dev.demo import run_demo

    sys.exit(run_demo(events_file, gen_model, timeout_s, console))


COMMANDS = (worker, up, pool, broker, demo)

"""What every command shares: the settings, their errors as messages, and options declared once."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click
from rich.console import Console

from guardstream.topology.settings import Settings
from guardstream.wire.settings import GatewaySettings, SettingsError

console = Console(stderr=True)


def load_settings(kind: type[GatewaySettings] = Settings, **overrides):
    """A worker's settings, or a gateway's (`GatewaySettings`: only what it reads of the environment)."""
    try:
        return kind.load(**overrides)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def bootstrap_or_fail(settings: GatewaySettings) -> str:
    if not settings.kafka.bootstrap:
        raise click.UsageError("no Kafka given: pass --bootstrap HOST:PORT or set GUARDSTREAM_KAFKA_BOOTSTRAP "
                               "(or use `guardstream up`, which starts the embedded broker)")
    return settings.kafka.bootstrap


def parsed_policy(policy_source: str | None):
    """--policy as a Policy, or None when not given."""
    from guardstream.wire.policy import Policy

    if not policy_source:
        return None
    try:
        return Policy.from_source(policy_source)
    except (OSError, ValueError) as exc:
        raise click.UsageError(f"--policy: {exc}") from None


@contextmanager
def fatal_as_message():
    """Settings and pool problems end the command with their message, not a traceback."""
    from guardstream.dev.kafka import KafkaError
    from guardstream.wire.errors import NotAuthorized
    from guardstream.wire.policy_feed import PoliciesUnavailable
    from guardstream.workers.pools.model_pool import PoolMissing

    try:
        yield
    except (SettingsError, PoolMissing, PoliciesUnavailable, KafkaError, NotAuthorized) as exc:
        raise click.ClickException(str(exc)) from None


def print_table(table, width: int = 140) -> None:
    """On stdout; wide enough for a log file or CI when not on a terminal."""
    Console(width=None if sys.stdout.isatty() else width).print(table)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def with_options(*options):
    """One decorator from several click options, applied in the order given."""
    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command
    return apply


bootstrap_option = click.option("--bootstrap", "kafka_bootstrap",
                                 help="Kafka bootstrap servers [env GUARDSTREAM_KAFKA_BOOTSTRAP]")
ray_address_option = click.option("--ray-address", help="Ray cluster address; default: a local Ray "
                                                        "[env GUARDSTREAM_RAY_ADDRESS]")
gen_model_option = click.option("--gen-model", help="Qwen3Guard-Gen hub id or path; default: the tiny test fixture")
stream_model_option = click.option("--stream-model", help="Qwen3Guard-Stream hub id or path; default: the tiny test fixture")
loglevel_option = click.option("--loglevel", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
policy_option = click.option("--policy", "policy_source", help="policy as JSON or a JSON file path [env GUARDSTREAM_POLICY]")
metrics_port_option = click.option("--metrics-port", type=int, help="serve /healthz, /readyz and /metrics on this port")

models_options = with_options(
    gen_model_option,
    click.option("--gen-actors", type=int, help="GenGuard actors in the pool [env GUARDSTREAM_GEN_ACTORS]"),
    click.option("--gen-backend", type=click.Choice(["transformers", "vllm"]), help="engine inside the GenGuard actors"),
    stream_model_option,
    click.option("--stream-actors", type=int, help="StreamGuard actors in the pool [env GUARDSTREAM_STREAM_ACTORS]"),
)

"""`guardstream`: one module per concept; each lists its commands in COMMANDS.

Commands parse options, call the module that decides, and print; they decide nothing themselves."""

from __future__ import annotations

import click

from guardstream.cli import access, bench, bench_system, canary, evaluate, policy, review, run, serve, topics


@click.group()
def main() -> None:
    """guardstream: moderate Kafka chat streams with Qwen3Guard on a Ray pool."""


for _command in (*run.COMMANDS, *topics.COMMANDS, *serve.COMMANDS, *policy.COMMANDS, *canary.COMMANDS,
                 *access.COMMANDS, *evaluate.COMMANDS, *review.COMMANDS, bench.bench, *bench_system.COMMANDS):
    main.add_command(_command)

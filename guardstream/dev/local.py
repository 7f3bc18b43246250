"""Everything on one machine: the loopback broker of `guardstream broker`, and `guardstream up`."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from guardstream.runtime import run_worker
from guardstream.topology.settings import Settings


def loopback_broker(port: int | None, kafka: bool, nodes: int, kafka_version: str | None,
                    report: Callable[[str], None]):
    """The embedded Tansu, or an Apache Kafka cluster of `nodes` (a context manager either way)."""
    if not kafka:
        from guardstream.dev.broker import EmbeddedBroker

        return EmbeddedBroker(port)
    from guardstream.dev.kafka import NEWEST, KafkaCluster

    return KafkaCluster(nodes, port, kafka_version or NEWEST, report=report)


def run_up(settings: Settings, loglevel: str, announce: Callable[[str], None]) -> None:
    """A worker on the Kafka in the settings, or on an embedded broker started for it.

    The embedded broker keeps nothing across runs, so neither do the tables beside it: unless a
    data_dir is set, they live in `home`/embedded-run, emptied first."""
    from guardstream.dev.broker import EmbeddedBroker

    if settings.kafka.bootstrap:
        run_worker(settings, settings.kafka.bootstrap, loglevel)
        return
    settings.home.mkdir(parents=True, exist_ok=True)
    if settings.data_dir is None:
        settings = settings.model_copy(update={"data_dir": settings.home / "embedded-run"})
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    with EmbeddedBroker(log_path=settings.home / "broker.log") as embedded:
        announce(embedded.bootstrap)
        run_worker(settings, embedded.bootstrap, loglevel, abandon=[embedded.stop])

"""The app a worker builds: the agents it was told to run, their tables, and no standby copies."""

import asyncio
import types

from guardstream.topology.app import create_app
from guardstream.topology.settings import Settings


def test_a_worker_registers_the_agents_it_runs_and_keeps_no_standby_tables():
    sinks = create_app(Settings.load({}, agents="enforcement,audit,analytics"), "127.0.0.1:1", None, None)
    assert sorted(sinks.agents) == ["analytics-count", "analytics-route", "enforcement", "review-follow-up"]
    # audit reads the verdicts in a consumer group of its own, so a database outage holds back no agent
    assert [s.__name__ for s in sinks._extra_services] == ["Audit"]
    assert sorted(sinks.tables) == ["analytics-counted", "analytics-routed"]
    fake = types.SimpleNamespace(pool=None)
    models = create_app(Settings.load({}, agents="gen,stream"), "127.0.0.1:1", fake, fake)
    assert sorted(models.agents) == ["gen", "stream"] and list(models.tables) == ["stream-state"]
    # a standby copy would put partitions this worker does not own into the tables its timers expire
    assert sinks.conf.table_standby_replicas == models.conf.table_standby_replicas == 0


def test_the_agents_consumer_long_polls_as_long_as_the_settings_say():
    # Faust's own 1,500 ms would be most of a chunk's latency on Tansu, which answers a fetch at the end of its wait
    app = create_app(Settings.load({}, agents="enforcement", kafka_fetch_max_wait_ms=7), "127.0.0.1:1", None, None)

    async def created():  # aiokafka makes its consumers inside a running loop
        return app.consumer._thread._create_worker_consumer(app.transport)

    assert asyncio.run(created())._fetch_max_wait_ms == 7


def test_the_workers_producer_is_idempotent_on_kafka_and_plain_on_tansu():
    """Verdicts, actions and dead letters: acks=all, and no second copy when a send is retried across a
    leader change. Tansu has no idempotent producer (InitProducerId), nor needs its changelog seal on Kafka."""
    kafka = create_app(Settings.load({}, agents="enforcement"), "127.0.0.1:1", None, None)
    tansu = create_app(Settings.load({}, agents="enforcement", broker_kind="tansu"), "127.0.0.1:1", None, None)
    assert kafka.producer._settings_extra() == {"acks": "all", "enable_idempotence": True}
    assert tansu.producer._settings_extra() == {}
    assert (kafka.transport.seal_changelogs, tansu.transport.seal_changelogs) == (False, True)


def test_the_state_directory_is_the_workers_alone(tmp_path):
    """The tables hold prompts' token ids and held chunks: no other user of the machine reads them."""
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    create_app(Settings.load({}, agents="enforcement", data_dir=str(state)), "127.0.0.1:1", None, None)
    assert state.stat().st_mode & 0o777 == 0o700

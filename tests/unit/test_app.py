"""The app a worker builds: the agents it was told to run, their tables, and no standby copies."""

import types

from guardstream.topology.app import create_app
from guardstream.topology.settings import Settings


def test_a_worker_registers_the_agents_it_runs_and_keeps_no_standby_tables():
    sinks = create_app(Settings.load({}, agents="enforcement,audit,analytics"), "127.0.0.1:1", None, None)
    assert sorted(sinks.agents) == ["analytics-count", "analytics-route", "audit", "enforcement"]
    assert sorted(sinks.tables) == ["analytics-counted", "analytics-routed"]
    fake = types.SimpleNamespace(pool=None)
    models = create_app(Settings.load({}, agents="gen,stream"), "127.0.0.1:1", fake, fake)
    assert sorted(models.agents) == ["gen", "stream"] and list(models.tables) == ["stream-state"]
    # a standby copy would put partitions this worker does not own into the tables its timers expire
    assert sinks.conf.table_standby_replicas == models.conf.table_standby_replicas == 0

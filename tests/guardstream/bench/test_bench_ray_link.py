"""`guardstream bench ray-link` reaches one `ray start` cluster both ways, with token
authentication as in the chart: as a driver on its node (GCS address) and through Ray Client. Its
numbers are never asserted, only that every call was made and timed on each link."""

from __future__ import annotations

import secrets

import pytest

from guardstream.bench.ray_link import measure_calls, ray_link_tables
from guardstream.bench.timing import Measurement
from guardstream.dev.ray_cluster import ray_cluster

pytestmark = pytest.mark.integration


def test_each_link_is_measured_on_a_real_cluster(tmp_path, monkeypatch):
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(16))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    with ray_cluster(head_cpus=1) as (gcs, client):
        assert client.startswith("ray://") and not gcs.startswith("ray://")
        costs = [measure_calls("driver", gcs, 20), measure_calls("client", client, 20)]
    assert [len(c.round_trips_ms) for c in costs] == [20, 20] and all(c.calls_per_s > 0 for c in costs)
    runs = [(link, Measurement(f"no-op engine, {link}", 256, 100, seconds, [1.0])) for link, seconds in
            (("driver", 1.0), ("client", 2.0))]
    calls, pipeline = ray_link_tables(costs, runs)
    assert list(pipeline.columns[-1].cells) == ["1.00", "0.50"]  # each link next to the driver of the same run
    assert list(calls.columns[-1].cells)[0] == "1.00"

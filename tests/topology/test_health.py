"""The probe logic: snapshots from the event loop, judged by the HTTP thread."""

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from guardstream.dev.broker import free_port
from guardstream.wire import metrics  # noqa: F401 - registers the series /metrics shows
from guardstream.topology.health import HEALTH, STALE_AFTER_S, Health, serve_metrics


def test_probes_answer_from_the_latest_snapshot():
    health = Health()
    assert health.probe("healthz")[0] == 503  # nothing reported yet
    health.update(True, "agents: gen", False, "no partitions assigned")
    assert health.probe("healthz") == (200, {"ok": True, "detail": "agents: gen"})
    assert health.probe("readyz") == (503, {"ok": False, "detail": "no partitions assigned"})
    health.update(False, "crashed: audit", False, "crashed: audit")
    assert health.probe("healthz") == (503, {"ok": False, "detail": "crashed: audit"})


def test_a_stale_snapshot_means_the_event_loop_is_stuck():
    health = Health()
    health.update(True, "fine", True, "fine")
    health.at = time.monotonic() - STALE_AFTER_S - 1
    for probe in ("healthz", "readyz"):
        status, state = health.probe(probe)
        assert status == 503 and "has not reported" in state["detail"]


def test_the_server_binds_where_told_and_a_slow_client_holds_nobody_up():
    port = free_port()
    HEALTH.update(True, "agents: gen", True, "4 partitions assigned")
    serve_metrics(port, "127.0.0.1")
    deadline = time.monotonic() + 10
    while True:
        try:
            slow = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest of its headers
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert json.loads(response.read()) == {"ok": True, "detail": "agents: gen"}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"guardstream_dead_letters_total" in response.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=5)
    assert missing.value.code == 404
    slow.close()
    other_addresses = [a for a in {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
                       if not a.startswith("127.")]
    for address in other_addresses:  # bound to loopback: not reachable on the machine's other addresses
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=1)


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=2)
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_probes_on_their_own_port_answer_while_scrapers_hold_every_metrics_connection():
    port, health_port = free_port(), free_port()
    HEALTH.update(True, "agents: gen", True, "4 partitions assigned")
    serve_metrics(port, "127.0.0.1", health_port)
    connect(health_port).close()
    held = [connect(port) for _ in range(70)]  # past the metrics server's 64
    for s in held:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert refused.value.code == 503  # the metrics server is full
    for probe in ("healthz", "readyz"):
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/{probe}", timeout=5) as response:
            assert json.loads(response.read())["ok"]
    with pytest.raises(urllib.error.HTTPError) as missing:  # the metrics, which name tenants, are not on the probes' port
        urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=5)
    assert missing.value.code == 404
    for s in held:
        s.close()


def test_a_long_blocking_step_is_alive_and_not_ready_and_never_stale(monkeypatch):
    health = Health()
    monkeypatch.setattr("guardstream.topology.health.STALE_AFTER_S", 0.3)
    with health.busy("loading the models", every_s=0.05):
        time.sleep(0.6)  # longer than the stale limit: the reporter keeps the snapshot fresh
        assert health.probe("healthz") == (200, {"ok": True, "detail": "loading the models"})
        assert health.probe("readyz") == (503, {"ok": False, "detail": "loading the models"})
    time.sleep(0.6)
    assert health.probe("healthz")[0] == 503  # once it is over, nothing reports for it any more


def test_each_actor_s_report_sets_its_memory_and_kv_gauges():
    from prometheus_client import REGISTRY

    from guardstream.wire.metrics import record_actors

    record_actors("stream", [{"rss": 5, "kv_used_bytes": 3, "kv_budget_bytes": 8, "kv_evictions": 2}, {"rss": 7}])
    value = REGISTRY.get_sample_value
    assert value("guardstream_actor_rss_bytes", {"kind": "stream", "actor": "1"}) == 7
    assert value("guardstream_actor_kv_bytes", {"pool": "stream", "actor": "0", "kind": "used"}) == 3
    assert value("guardstream_actor_kv_bytes", {"pool": "stream", "actor": "0", "kind": "budget"}) == 8
    assert value("guardstream_actor_kv_evictions", {"pool": "stream", "actor": "0"}) == 2

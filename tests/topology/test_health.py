"""The probe logic: snapshots from the event loop, judged by the HTTP thread."""

import time

from guardstream.topology.health import STALE_AFTER_S, Health


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

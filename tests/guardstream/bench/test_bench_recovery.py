"""`guardstream bench recovery` reads each recovery's time from the worker log (its figures are
reported, never asserted; the replay a restart costs on each store is asserted by the restart
tests: tests/topology/test_stream_worker_restart.py, test_analytics_long_run.py)."""

import pytest

from guardstream.bench.recovery import recovery_seconds

LOG = """[2026-12-01 00:10:33,269] INFO faust.tables.recovery: [^---Recovery]: Starting...
[2026-12-01 00:10:37,674] INFO faust.tables.recovery: [^---Recovery]: Recovery complete
[2026-12-01 00:10:39,000] INFO faust.tables.recovery: [^---Recovery]: Starting...
"""


def test_recovery_time_is_read_from_the_first_recovery_in_the_log():
    assert recovery_seconds(LOG) == pytest.approx(4.405)
    assert recovery_seconds(LOG.splitlines()[0]) is None  # still recovering

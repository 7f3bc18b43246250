"""`guardstream bench recovery` on a small state against the embedded broker: both stores restore
every entry on a first start; after a SIGKILL, memory replays the whole changelog again and RocksDB
only the seals written since (its times are reported, never asserted). And its log reading."""

import pytest

from guardstream.bench.recovery import STARTS, recovery_seconds, recovery_table, run_recovery_bench

LOG = """[2026-12-01 00:10:33,269] INFO faust.tables.recovery: [^---Recovery]: Starting...
[2026-12-01 00:10:37,674] INFO faust.tables.recovery: [^---Recovery]: Recovery complete
[2026-12-01 00:10:39,000] INFO faust.tables.recovery: [^---Recovery]: Starting...
"""


def test_recovery_time_is_read_from_the_first_recovery_in_the_log():
    assert recovery_seconds(LOG) == pytest.approx(4.405)
    assert recovery_seconds(LOG.splitlines()[0]) is None  # still recovering


@pytest.mark.integration
def test_a_restart_replays_the_whole_changelog_from_memory_and_only_its_tail_from_disk(tmp_path):
    entries, partitions = 2_000, 4
    found = run_recovery_bench([entries], ["memory", "rocksdb"], tmp_path, print, partitions=partitions, timeout_s=240)
    replayed = {(r.store, r.start): r.replayed for r in found}
    assert set(replayed) == {(store, start) for store in ("memory", "rocksdb") for start in STARTS}
    assert all(replayed[(store, STARTS[0])] >= entries for store in ("memory", "rocksdb")), replayed
    assert replayed[("memory", STARTS[1])] >= entries, replayed
    assert replayed[("rocksdb", STARTS[1])] <= 2 * partitions, replayed
    assert all(r.seconds > 0 and r.rss_mb > 0 for r in found)
    assert recovery_table(found, "t").row_count == 4

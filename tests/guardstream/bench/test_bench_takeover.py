"""`guardstream bench takeover` sorts each event by when it was produced relative to the kill, and
sets each phase's p99 next to the steady state's of the same run (its numbers are never asserted)."""

from guardstream.bench.takeover import phases, takeover_table


def test_events_fall_into_the_phase_of_their_produce_time():
    timed = {"a": (-10.0, 100.0), "b": (-2.5, 120.0), "c": (-1.0, 9000.0), "d": (-0.01, 8000.0), "e": (0.0, 5000.0)}
    found = phases(timed, window_s=2)
    assert [sorted(p.delays_ms) for p in found] == [[100.0, 120.0], [8000.0, 9000.0], [5000.0]]
    table = takeover_table(found, "t")
    assert list(table.columns[-1].cells) == ["1.0", f"{9000 / 120:,.1f}", f"{5000 / 120:,.1f}"]

"""`guardstream bench reload` sets the change delays next to the steady verdict delays of the same
run (its numbers are never asserted)."""

from guardstream.bench.reload import reload_table


def test_the_change_delays_are_set_against_the_steady_p99():
    table = reload_table([40.0, 60.0, 300.0], [50.0] * 99 + [100.0], "t")
    assert list(table.columns[1].cells) == ["100", "3"]
    assert list(table.columns[-1].cells) == ["1.0", f"{300 / 100:,.1f}"]

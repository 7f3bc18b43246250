"""The commit rule: only a consecutive run of acked offsets that starts at the committed one."""

from guardstream.topology.consumer import committable


def run(acked, committed):
    acked, index = list(acked), set(acked)
    return committable(acked, index, committed), acked, index


def test_a_run_from_the_committed_offset_is_committed():
    assert run([10, 11, 12], 10) == (13, [], set())
    assert run([12, 10, 11, 15, 16], 10) == (13, [15, 16], {15, 16})


def test_an_unacked_record_at_the_head_holds_the_commit():
    # faust-streaming lets exactly this through (min(acked) - committed == 1)
    assert run([11, 12, 13], 10)[0] is None
    assert run([1, 2, 3], 0)[0] is None  # and skips its check when the committed offset is 0


def test_offsets_already_committed_are_dropped():
    assert run([8, 9, 10, 11], 10) == (12, [], set())


def test_without_a_committed_offset_the_first_run_is_committed():
    assert run([0, 1, 2, 5], None) == (3, [5], {5})
    assert run([], 4)[0] is None

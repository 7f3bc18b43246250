"""The reply partition assignor alone: every gateway keeps the partition it holds, newcomers get
free ones, and only past the partition count do gateways share."""

from hypothesis import given
from hypothesis import strategies as st

from guardstream.reply_claim import homes


def test_members_keep_their_partitions_and_newcomers_get_free_ones():
    first = homes([0, 1, 2, 3], {"a": None})
    assert first == {"a": 0}
    grown = homes([0, 1, 2, 3], {"a": 0, "b": None, "c": None})
    assert grown == {"a": 0, "b": 1, "c": 2}
    # "a" left; "b" and "c" stay where they are, and a newcomer takes a free partition
    assert homes([0, 1, 2, 3], {"b": 1, "c": 2, "d": None}) == {"b": 1, "c": 2, "d": 0}


def test_a_conflict_leaves_the_partition_to_one_member_and_more_members_than_partitions_share():
    assert homes([0, 1], {"a": 1, "b": 1}) == {"a": 1, "b": 0}
    assert homes([0, 1], {"a": 0, "b": 1, "c": None, "d": None}) == {"a": 0, "b": 1, "c": 0, "d": 1}
    assert homes([], {"a": None}) == {"a": None}
    assert homes([0, 1], {"a": 7}) == {"a": 0}  # a partition the topic no longer has


@given(st.integers(1, 12), st.dictionaries(st.text(min_size=1, max_size=3), st.none() | st.integers(0, 15), max_size=20))
def test_every_member_gets_a_partition_and_none_is_shared_while_there_are_enough(count, held):
    partitions = list(range(count))
    given_ = homes(partitions, held)
    assert set(given_) == set(held) and all(p in partitions for p in given_.values())
    if len(held) <= count:
        assert len(set(given_.values())) == len(held)
    kept = [m for m, p in held.items() if p in partitions and list(held.values()).count(p) == 1]
    assert all(given_[m] == held[m] for m in kept)  # an uncontested claim is never moved

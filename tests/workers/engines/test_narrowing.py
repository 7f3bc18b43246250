"""A batch that fails is narrowed down to the items that fail alone; a fatal failure is not."""

import pytest

from guardstream.workers.engines.narrowing import narrowed, one_at_a_time


class Lost(RuntimeError):
    pass


def test_only_the_poison_item_fails_and_its_batch_mates_get_their_own_results():
    runs = []

    def run(items):
        runs.append(list(items))
        if "poison" in items:
            raise ValueError("cannot")
        return [item.upper() for item in items]

    got = one_at_a_time(["a", "poison", "b"], run, lambda item, exc: f"{item}: {exc}", "probe")
    assert got == ["A", "poison: cannot", "B"]
    assert runs == [["a", "poison", "b"], ["a"], ["poison"], ["b"]]


def test_a_fatal_failure_is_raised_at_once():
    def run(items):
        raise Lost("device gone")

    with pytest.raises(Lost):
        one_at_a_time(["a", "b"], run, lambda item, exc: item, "probe", raises=lambda exc: isinstance(exc, Lost))


async def test_the_agents_narrowing_awaits_each_try_and_failure_in_order():
    """`narrowed` is the one the agents use: their steps and dead letters await Kafka."""
    events = []

    async def run(items):
        events.append(("run", list(items)))
        if "poison" in items:
            raise ValueError("cannot")
        return [item.upper() for item in items]

    async def failed(item, exc):
        events.append(("failed", item))
        return None

    assert await narrowed(["a", "poison", "b"], run, failed, "probe") == ["A", None, "B"]
    assert events == [("run", ["a", "poison", "b"]), ("run", ["a"]), ("run", ["poison"]), ("failed", "poison"),
                      ("run", ["b"])]
    with pytest.raises(ValueError):
        await narrowed(["a", "poison"], run, failed, "probe", raises=lambda exc: isinstance(exc, ValueError))

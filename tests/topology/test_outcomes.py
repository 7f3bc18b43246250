"""`Outcomes.settle` with fake steps: every record ends with an outcome, none is lost, none raises."""

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import Outcomes, StoreError, Undeliverable, is_transient
from guardstream.workers.faults import InjectedFault
from guardstream.workers.sinks.audit import AuditRejected, AuditUnavailable


def records(n: int) -> list[RawRecord]:
    return [RawRecord("guard.conversations", 0, offset, f"k{offset}".encode(), b"{}") for offset in range(n)]


class Sink:
    """Collects what a step delivered and the dead letters."""

    def __init__(self, letter_failures: list[Exception] = ()):
        self.delivered: list[int] = []
        self.letters = []
        self.letter_failures = list(letter_failures)

    async def send_letters(self, letters) -> None:
        if self.letter_failures:
            raise self.letter_failures.pop(0)
        self.letters += letters


def outcomes(sink: Sink) -> Outcomes:
    return Outcomes("test", sink.send_letters, first_backoff_s=0.001, max_backoff_s=0.004)


def test_transient_and_permanent_failures_are_told_apart():
    for exc in (KafkaConnectionError(), ConnectionError(), TimeoutError(), InjectedFault("x"), AuditUnavailable("db")):
        assert is_transient(exc), exc
    for exc in (MessageSizeTooLargeError(), ValueError(), RecursionError(), AuditRejected("row"), Undeliverable("x"),
                KeyError("k")):
        assert not is_transient(exc), exc


async def test_a_batch_that_succeeds_is_delivered_once():
    sink, calls = Sink(), []

    async def step(batch):
        calls.append(len(batch))
        sink.delivered += [r.offset for r in batch]

    await outcomes(sink).settle(records(5), step)
    assert (calls, sink.delivered, sink.letters) == ([5], [0, 1, 2, 3, 4], [])


async def test_transient_failures_are_retried_with_the_whole_batch_until_they_pass():
    sink, failures = Sink(), [KafkaConnectionError(), ConnectionError("ray"), TimeoutError()]

    async def step(batch):
        if failures:
            raise failures.pop(0)
        sink.delivered += [r.offset for r in batch]

    await outcomes(sink).settle(records(4), step)
    assert (sink.delivered, sink.letters) == ([0, 1, 2, 3], [])


async def test_a_failing_local_store_holds_the_batch_and_says_so_until_it_works_again():
    """A full disk is the worker's problem, not the records': no dead letter, offsets held, and
    `stuck` (which fails liveness) set while it lasts."""
    sink, seen = Sink(), []
    handler = outcomes(sink)

    async def step(batch):
        if len(seen) < 3:
            seen.append(handler.stuck)
            raise StoreError("writing the local store of streams[0]: IO error: No space left on device")
        seen.append(handler.stuck)
        sink.delivered += [r.offset for r in batch]

    await handler.settle(records(3), step)
    assert (sink.delivered, sink.letters) == ([0, 1, 2], [])
    assert seen[0] is None and "No space left on device" in seen[1] and handler.stuck is None


async def test_a_poison_record_is_dead_lettered_alone_and_its_batch_mates_get_their_outcomes():
    sink = Sink()

    async def step(batch):
        if any(r.offset == 2 for r in batch):
            raise RecursionError("maximum recursion depth exceeded")
        sink.delivered += [r.offset for r in batch]

    await outcomes(sink).settle(records(5), step)
    assert sorted(sink.delivered) == [0, 1, 3, 4]
    assert [(d.offset, d.error_code) for d in sink.letters] == [(2, "processing_failed")]
    assert "RecursionError: maximum recursion depth exceeded" in sink.letters[0].error


async def test_the_dead_letter_code_comes_from_the_failure():
    sink = Sink()

    async def step(batch):
        if batch[0].offset == 0:
            raise Undeliverable("MessageSizeTooLargeError")
        raise AuditRejected("refused the row: check constraint")

    await outcomes(sink).settle(records(2), step)
    assert [(d.offset, d.error_code) for d in sink.letters] == [(0, "undeliverable"), (1, "audit_rejected")]


async def test_a_dead_letter_refused_for_its_size_goes_in_its_minimal_form():
    too_large = Undeliverable("MessageSizeTooLargeError")
    too_large.__cause__ = MessageSizeTooLargeError()
    sink = Sink(letter_failures=[KafkaConnectionError(), too_large])

    async def step(batch):
        raise ValueError("bad")

    await outcomes(sink).settle([RawRecord("guard.conversations", 0, 7, b"k" * 600_000, b"x" * 900_000)], step)
    [letter] = sink.letters
    assert (letter.error_code, letter.offset, letter.key, letter.raw_value) == ("processing_failed", 7, None, "")
    assert letter.key_size == 600_000 and letter.raw_size == 900_000 and "was refused" in letter.error


async def test_a_dead_letter_topic_that_refuses_is_retried_and_reported_until_it_takes_the_letter():
    refused = Undeliverable("TopicAuthorizationFailedError")
    sink = Sink(letter_failures=[refused] * 3)
    handler = outcomes(sink)
    seen = []

    async def step(batch):
        raise ValueError("bad")

    async def watch():
        while not sink.letters:
            seen.append(handler.refusing)
            await asyncio.sleep(0.001)

    await asyncio.gather(handler.settle(records(1), step), watch())
    assert [d.error_code for d in sink.letters] == ["processing_failed"] and handler.refusing is None
    assert any(s and "dead-letter topic refuses test's letters" in s for s in seen)


async def test_cancellation_leaves_the_batch_without_an_outcome_so_nothing_is_acked():
    sink, started = Sink(), asyncio.Event()

    async def step(batch):
        started.set()
        raise ConnectionError("broker down")  # retried for ever while offsets are held

    task = asyncio.create_task(outcomes(sink).settle(records(3), step))
    await started.wait()
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (sink.delivered, sink.letters) == ([], [])

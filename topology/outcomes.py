"""Every record of a batch gets an outcome before any offset moves.

An agent hands a batch of raw records and its step (records -> delivered outcomes) to
`Outcomes.settle`, and acks the batch's events only when `settle` returns. `settle` never
raises (except when the worker is cancelled, which acks nothing):

- a transient failure (a retriable Kafka error, a connection error such as Ray's or the audit
  database's, a timeout, the broker's ACLs refusing this worker, the local store failing) is
  retried with capped exponential backoff while the agent holds its offsets; one of the local
  store's (a full disk) also fails the worker's liveness while it lasts (`stuck`);
- any other failure narrows the batch down record by record, so batch-mates of a poison record
  get their outcomes; a record that still fails alone becomes a dead letter with the reason.

Dead letters are bounded (`dead_letter`); one the broker still refuses for its size is sent in
its minimal form. A dead-letter topic that refuses for any other reason (authorization, a missing
topic) is retried with the offsets held, and `refusing` says why, which fails the worker's liveness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, ProducerClosed

from guardstream.schemas import DeadLetter
from guardstream.schemas.intake import RawRecord, dead_letter, minimal_letter
from guardstream.wire import metrics
from guardstream.wire.errors import REFUSED_BY_ACLS, NotAuthorized, describe
from guardstream.workers.engines.narrowing import narrowed

log = logging.getLogger(__name__)

Step = Callable[[list[RawRecord]], Awaitable[None]]


class Rejected(Exception):
    """A permanent failure that names its dead letter's code (the step's default: processing_failed)."""

    error_code = "processing_failed"


class Undeliverable(Rejected):
    error_code = "undeliverable"


class StoreError(OSError):
    """The local store failed a read or a write (a full disk, an I/O error): the worker's, not the
    record's, so no record is dead-lettered for it."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, REFUSED_BY_ACLS + (NotAuthorized, StoreError)):
        return True
    if isinstance(exc, KafkaError):
        return exc.retriable or isinstance(exc, (KafkaTimeoutError, ProducerClosed))
    return isinstance(exc, (ConnectionError, TimeoutError))


class Outcomes:
    def __init__(self, agent: str, send_letters: Callable[[list[DeadLetter]], Awaitable[None]],
                 first_backoff_s: float = 0.2, max_backoff_s: float = 30):
        self.agent, self.send_letters = agent, send_letters
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.refusing: str | None = None  # why the dead-letter topic refuses this agent's letters, while it does
        self.stuck: str | None = None  # why the local store fails this agent's steps, while it does

    async def settle(self, records: list[RawRecord], step: Step) -> None:
        """Run `step` until each record has its outcome: from it, or a dead letter of its own."""
        if records:
            await narrowed(records, lambda batch: self._stepped(batch, step), self._dead_letter, self.agent)

    async def _stepped(self, records: list[RawRecord], step: Step) -> list[None]:
        """`step(records)`, its transient failures retried; a lasting one is raised, to narrow down."""
        failure = await self._retrying(lambda: step(records))
        if failure is not None:
            metrics.BATCH_FAILURES.labels(self.agent).inc()
            raise failure
        return [None] * len(records)

    async def _dead_letter(self, record: RawRecord, failure: Exception) -> None:
        letter = dead_letter(record, getattr(failure, "error_code", Rejected.error_code), f"{self.agent}: {describe(failure)}")
        log.error("%s: record %s[%d]@%d failed alone (%s); dead-lettered", self.agent, letter.topic, letter.partition,
                  letter.offset, describe(failure))
        await self._send_letter(letter)

    async def _send_letter(self, letter) -> None:
        refused = await self._retrying(lambda: self.send_letters([letter]))
        if refused is not None and _too_large(refused):
            log.error("%s: the dead letter of %s[%d]@%d was refused for its size; sending its minimal form", self.agent,
                      letter.topic, letter.partition, letter.offset)
            letter = minimal_letter(letter, f"the full dead letter was refused: {describe(refused)}")
            refused = await self._retrying(lambda: self.send_letters([letter]))
        while refused is not None:  # a dead letter is the last outcome there is: retried, offsets held, loudly
            self.refusing = f"the dead-letter topic refuses {self.agent}'s letters: {describe(refused)}"
            log.error("%s; retrying (offsets held)", self.refusing)
            await asyncio.sleep(self.max_backoff_s)
            refused = await self._retrying(lambda: self.send_letters([letter]))
        self.refusing = None

    async def _retrying(self, attempt: Callable[[], Awaitable[None]]) -> BaseException | None:
        """None once `attempt` succeeds. Transient failures are retried; a permanent one is returned."""
        backoff = self.first_backoff_s
        while True:
            try:
                await attempt()
                self.stuck = None
                return None
            except Exception as exc:  # noqa: BLE001 - classified here, never lost
                if not is_transient(exc):
                    return exc
                if isinstance(exc, StoreError):
                    self.stuck = f"{self.agent}: the local store fails ({describe(exc)})"
                metrics.RETRIES.labels(self.agent).inc()
                log.warning("%s: %s; retrying in %.1fs (offsets held)", self.agent, describe(exc), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)


def _too_large(exc: BaseException) -> bool:
    return any(isinstance(e, MessageSizeTooLargeError) for e in (exc, exc.__cause__))

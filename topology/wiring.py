"""What every agent is wired with: the app, its settings and topics, and the one way to deliver,
dead-letter and settle a batch.

Every agent reads micro-batches without Faust's automatic acks (`noack_take`) and acks a batch
only after `Outcomes.settle` has delivered an outcome for each of its records: a verdict, an
action, an audit row or a dead letter. An exception therefore never acknowledges a record, and
a record that fails alone is dead-lettered without its batch-mates. Values travel as raw bytes
and are parsed by the pydantic wire models. Timers never raise (`guarded`): an exception in a
timer would stop the whole app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import faust

from guardstream.schemas import FOR_HEADER, DeadLetter, VerdictEvent
from guardstream.schemas.intake import RawRecord, decode
from guardstream.topology.outcomes import Outcomes, Step, Undeliverable, is_transient
from guardstream.wire.errors import describe
from guardstream.topology.settings import Settings
from guardstream.topology.state import DISK_OPTIONS, PartitionedTable
from guardstream.wire.policy import PoliciesInForce
from guardstream.wire.topics import topics_for
from guardstream.workers import faults
from guardstream.wire import metrics

log = logging.getLogger(__name__)
VERDICT_BATCH = 256
Send = tuple  # (topic, key, value) or (topic, key, value, partition, headers)


def guarded(name: str, body: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A timer body that logs its failures instead of stopping the app; the next tick tries again."""

    async def run() -> None:
        try:
            await body()
        except Exception as exc:  # noqa: BLE001 - a timer that raises stops the whole Faust app
            (log.warning if is_transient(exc) else log.exception)("timer %s failed: %s; next tick tries again", name,
                                                                  describe(exc))

    run.__name__ = run.__qualname__ = name
    return run


# A changelog's deleted entries (a finished stream's prompt and token ids) leave it within hours,
# not the week of Kafka's default segment: segments roll hourly and the cleaner runs early.
CHANGELOG_CONFIGS = {"segment.ms": str(3_600_000), "delete.retention.ms": str(3_600_000),
                     "min.cleanable.dirty.ratio": "0.1"}

class Wiring:
    def __init__(self, app: faust.App, settings: Settings, bootstrap: str, policies: PoliciesInForce):
        self.app, self.settings, self.bootstrap, self.policies = app, settings, bootstrap, policies
        names = topics_for(settings.kafka)
        self.conversations, self.verdicts = self._raw(names.conversations.name), self._raw(names.verdicts.name)
        self.actions, self.dlq = self._raw(names.actions.name), self._raw(names.dlq.name)
        self.analytics, self.chunks = self._raw(names.analytics.name), self._raw(names.chunks.name)
        self.by_count_key = self._raw(names.analytics_by_key.name, internal=True)
        self.replies = self._raw(names.replies.name, partitions=names.replies.partitions)
        self.canary, self.review_decisions = self._raw(names.canary.name), self._raw(names.review_decisions.name)
        self.tables: dict[str, PartitionedTable] = {}
        self.outcomes: dict[str, Outcomes] = {}  # each agent's, for the health report

    def _raw(self, name: str, **kw) -> faust.TopicT:
        kw.setdefault("partitions", self.settings.kafka.topic_partitions)
        return self.app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kw)

    def verdict_sends(self, verdicts: list[VerdictEvent]) -> list[Send]:
        """Each verdict to the verdict topic and, when its request named one, to that partition of
        the replies topic; both with the header that lets a gateway skip what is not its own."""
        sends = []
        for v in verdicts:
            value, headers = v.model_dump_json().encode(), [(FOR_HEADER, v.answers())]
            sends.append((self.verdicts, v.conversation_id, value, None, headers))
            if v.reply_to is not None:
                if v.reply_to < self.settings.kafka.reply_partitions:
                    sends.append((self.replies, v.conversation_id, value, v.reply_to, headers))
                else:  # the verdict topic still has it; the gateway's claim is outside the topic
                    metrics.UNROUTABLE_REPLIES.inc()
        return sends

    def table(self, name: str) -> PartitionedTable:
        """A changelogged table of this app, co-partitioned with the topics (its size is a metric)."""
        options = dict(DISK_OPTIONS) if self.settings.table_store == "rocksdb" else None  # Faust's store consumes it
        self.tables[name] = PartitionedTable(self.app.Table(name, key_type=str, partitions=self.settings.kafka.topic_partitions,
                                                            options=options, extra_topic_configs=CHANGELOG_CONFIGS))
        return self.tables[name]

    async def deliver(self, sends: list[Send]) -> None:
        """Send and wait for every ack. Straight to the app's producer: Faust's Topic.send took 10 to
        30 times as long per record and held a Gen-only worker to about 750 verdicts/s. A failure
        that retrying cannot mend is `Undeliverable`, which dead-letters the record it came from.
        In a batch's step, it sends once the batch before it has every outcome (its `Turn`)."""
        faults.hit("deliver")
        if (turn := TURN.get()) is not None:
            await turn.wait()
        try:
            pending = []
            for topic, key, value, *where in sends:
                partition, headers = where or (None, None)
                pending.append(await self.app.producer.send(topic.get_topic_name(), key.encode() if key is not None
                                                            else None, value, partition, None, headers))
            await asyncio.gather(*pending)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise Undeliverable(describe(exc)) from exc

    def dead(self, letter: DeadLetter) -> Send:
        metrics.DEAD_LETTERS.labels(letter.topic, letter.error_code).inc()
        log.warning("dead letter from %s[%d]@%d: %s", letter.topic, letter.partition, letter.offset, letter.error)
        return self.dlq, letter.key, letter.model_dump_json().encode()

    async def send_letters(self, letters: list[DeadLetter]) -> None:
        await self.deliver([self.dead(d) for d in letters])

    def read_verdicts(self, records: list[RawRecord]) -> tuple[list[VerdictEvent], list[DeadLetter]]:
        decoded = [decode(r, VerdictEvent, self.settings.max_event_bytes) for r in records]
        return [d for d in decoded if isinstance(d, VerdictEvent)], [d for d in decoded if isinstance(d, DeadLetter)]

    def restore_owned(self, table: PartitionedTable, source: faust.TopicT) -> None:
        """What a table holds for partitions of its source topic that this worker no longer owns is dropped."""
        table.keep_partitions({tp.partition for tp in self.app.assignor.assigned_actives()
                               if tp.topic == source.get_topic_name()})

    async def settled(self, name: str, stream, size: int, wait_s: float, step: Step, in_flight: int = 1) -> None:
        """The loop every agent runs: a batch, an outcome for each record, then (only then) its acks.

        With `in_flight` > 1, that many batches settle at once: the next batch is judged while the
        one before it waits on its engine or its acks. Order is kept where it matters: a batch
        sends its records only once the batch before it has all its outcomes (`deliver` waits on
        its `Turn`), so a partition's records reach the topics in the order taken, and it acks its
        events only after the batch before it acked (Faust commits a consecutive run of acks)."""
        handler = self.outcomes[name] = Outcomes(name, self.send_letters)
        slots = asyncio.Semaphore(in_flight)
        failed = asyncio.get_running_loop().create_future()  # what the first batch's acks raised
        running: set[asyncio.Task] = set()

        def ended(task: asyncio.Task) -> None:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None and not failed.done():
                failed.set_exception(task.exception())

        async def take() -> None:
            last: Turn | None = None
            async for events in stream.noack_take(size, wait_s):
                await slots.acquire()
                last = Turn(last)
                last.task = asyncio.create_task(self._settle(handler, stream, events, step, last, slots))
                running.add(last.task)
                last.task.add_done_callback(ended)

        taking = asyncio.create_task(take())
        try:
            # a batch's failure stops the agent at once, as it did inline, not when the next batch comes
            await asyncio.wait([taking, failed], return_when=asyncio.FIRST_COMPLETED)
            (failed if failed.done() else taking).result()
        finally:
            for task in (taking, *running):
                task.cancel()
            await asyncio.gather(taking, *running, return_exceptions=True)
            if failed.done() and not failed.cancelled():
                failed.exception()  # retrieved: a failure raised above, or one that came with the stop

    @staticmethod
    async def _settle(handler: Outcomes, stream, events: list, step: Step, turn: Turn, slots: asyncio.Semaphore) -> None:
        TURN.set(turn)  # in this batch's task only: what `deliver` in its step waits on
        try:
            await handler.settle([RawRecord.of(e.message) for e in events], step)
            turn.settled.set()
            if turn.before is not None:
                await turn.before.task  # its acks first (raises if they failed): offsets are acked in order
            for event in events:
                await stream.ack(event)
        finally:
            turn.settled.set()
            turn.before = None  # the chain of turns ends here, not at the agent's first batch
            slots.release()


class Turn:
    """A batch's place in its agent's order: it sends once the batch before it has every outcome."""

    def __init__(self, before: Turn | None):
        self.before, self.settled = before, asyncio.Event()
        self.task: asyncio.Task | None = None

    async def wait(self) -> None:
        if self.before is not None:
            await self.before.settled.wait()


TURN: ContextVar[Turn | None] = ContextVar("turn", default=None)

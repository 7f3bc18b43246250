"""A gateway's verdict reader: one partition of the `replies` topic, read from its end, each
verdict handed to the request or stream that waits for it.

The partition is fixed (`reply_partition`) or claimed in the group `<prefix>gateways`
(`reply_claim.py`); the reader is at its end before the first request names it, so no verdict is
missed. It decodes only the verdicts someone waits for (their `guardstream-for` header says whose
they are), and hands on only those that echo the nonce of the request they answer: a verdict
written by anyone else, or for a request that reused the ids, is counted as foreign and skipped.
A reader that fails is started again with a new consumer (`wire/reconnecting.py`); meanwhile
every waiter is told at once (`ReaderDown`), so its caller gets the fail mode instead of waiting
out its timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from guardstream.reply_claim import ReplyClaim
from guardstream.schemas import FOR_HEADER, VerdictEvent
from guardstream.wire.kafka_internals import cluster_metadata
from guardstream.wire.errors import describe
from guardstream.wire.reconnecting import ReconnectingReader, started, stop_consumer
from guardstream.wire.settings import KafkaSettings
from guardstream.wire.topics import topics_for

log = logging.getLogger(__name__)
FETCH_WAIT_MS = 5  # aiokafka's default 500 ms long poll would be most of a stop's latency
CHECK_EVERY_S = 2.0  # how often the reader asks the broker for the replies topic's metadata (and so, if it answers)
RESTART_AFTER_S = 1.0  # a reader that died starts again after this
STOP_WAIT_S = 5  # what stopping waits for each part

Key = tuple[str, str, str]  # (tenant, conversation id, event id or stream id)


class ReaderDown(Exception):
    """The verdict reader stopped: no verdict can arrive until it is back."""


class Listener(Protocol):
    """A reply stream being guarded, as the reader sees it."""

    key: Key
    nonce: str

    def receive(self, verdict: VerdictEvent) -> None: ...

    def give_up(self, reason: str) -> None: ...


class VerdictReader(ReconnectingReader):
    label = "the verdict reader"
    retry_after_s = RESTART_AFTER_S

    def __init__(self, bootstrap: str, kafka: KafkaSettings, reply_partition: int | None = None):
        self.kafka, self._bootstrap = kafka, bootstrap
        fixed = kafka.reply_partition if reply_partition is None else reply_partition
        if fixed is not None and not 0 <= fixed < kafka.reply_partitions:
            raise ValueError(f"reply partition {fixed} is not one of the replies topic's "
                             f"{kafka.reply_partitions} (GUARDSTREAM_REPLY_PARTITIONS)")
        self.partition = fixed  # where this gateway's verdicts come: fixed, or claimed at start
        self._wanted = fixed  # the partition to read: the claim may move it (the reader follows, then requests)
        self._claim: ReplyClaim | None = None
        self.read = Counter()  # records and bytes fetched, how many were decoded, and the foreign ones skipped
        self._topics = topics_for(kafka)
        self._waiting: dict[Key, dict[str, asyncio.Future]] = {}  # key → nonce → its verdict
        self._streams: dict[Key, Listener] = {}
        self._task: asyncio.Task | None = None
        self._reading = asyncio.Event()  # set while the reader is running with its partition assigned
        self._broker_answered_at = 0.0
        self._lost_at: float | None = None  # when the reader last failed, until it is back

    @property
    def reading(self) -> bool:
        return self._reading.is_set()

    async def start(self) -> None:
        """Claim a partition (unless one is fixed), and return once the reader is at its end."""
        if self._wanted is None:
            self._claim = ReplyClaim(self._bootstrap, self.kafka, self._topics.replies.name, self._move)
            self._wanted = await self._claim.start()
        self.consumer = await self.open()
        self._task = asyncio.create_task(self.keep_reading(), name="guardstream-client-reader")

    async def stop(self) -> None:
        """Bounded: a broker that is gone makes nothing hang or fail."""
        self._reading.clear()
        if self._task is not None:
            self._task.cancel()
            if (await asyncio.wait([self._task], timeout=STOP_WAIT_S))[1]:
                log.warning("stopping the client: its verdict reader did not end within %ds; left behind", STOP_WAIT_S)
        if self._claim is not None:
            await self._claim.stop()
        consumer, self.consumer = self.consumer, None
        await stop_consumer(consumer, self.label)

    def readiness(self) -> tuple[bool, str]:
        """Whether verdicts can arrive: the reader runs and the broker answered it lately."""
        if not self.reading:
            return False, "the verdict reader is down (restarting)"
        silent = time.monotonic() - self._broker_answered_at
        if silent > 3 * CHECK_EVERY_S + 5:
            return False, f"the broker has not answered for {silent:.0f}s"
        return True, "reading verdicts"

    # -- who waits ----------------------------------------------------------------------------
    @contextmanager
    def expect(self, key: Key, nonce: str) -> Iterator[asyncio.Future]:
        """A future for the verdict of the request `key` that echoes `nonce`, while the block runs."""
        waiting = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, {})[nonce] = waiting
        try:
            yield waiting
        finally:
            mine = self._waiting.get(key, {})
            mine.pop(nonce, None)
            if not mine:
                self._waiting.pop(key, None)

    def follow(self, stream: Listener) -> None:
        if stream.key in self._streams:
            raise ValueError(f"stream {stream.key[2]} of conversation {stream.key[1]} is already being guarded")
        self._streams[stream.key] = stream

    def unfollow(self, stream: Listener) -> None:
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]

    def deliver(self, verdict: VerdictEvent) -> None:
        """A verdict goes to the request or stream whose nonce it echoes; one that echoes none is not ours."""
        if verdict.stream is not None:
            stream = self._streams.get((verdict.tenant, verdict.conversation_id, verdict.stream.stream_id))
            if stream is not None and stream.nonce == verdict.nonce:
                stream.receive(verdict)
                return
        else:
            waiting = self._waiting.get((verdict.tenant, verdict.conversation_id, verdict.source_event_id), {}).get(
                verdict.nonce or "")
            if waiting is not None:
                if not waiting.done():
                    waiting.set_result(verdict)
                return
        self.read["foreign"] += 1

    # -- the reader ---------------------------------------------------------------------------
    async def open(self) -> AIOKafkaConsumer:
        """A consumer at the end of the wanted partition (which must exist)."""
        consumer = await started(AIOKafkaConsumer(bootstrap_servers=self._bootstrap, group_id=None,
                                                  enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS,
                                                  **self.kafka.client_options()), self.label)
        try:
            for _ in range(100):
                if self._wanted in await self._partitions(consumer):
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the topic {self._topics.replies.name} does not exist (or lacks reply partition "
                                   f"{self._wanted}): start a guardstream worker (it creates the topics) or check "
                                   f"GUARDSTREAM_TOPIC_PREFIX and GUARDSTREAM_REPLY_PARTITIONS")
            await self._read_from_end(consumer, self._wanted)
        except BaseException:
            await stop_consumer(consumer, self.label)
            raise
        if self._lost_at is not None:
            log.info("the verdict reader is back after %.0fs", time.monotonic() - self._lost_at)
            self._lost_at = None
        self._reading.set()
        return consumer

    async def _read_from_end(self, consumer: AIOKafkaConsumer, partition: int) -> None:
        """Read `partition` from its end, and only then name it on requests (so no verdict is missed)."""
        tp = TopicPartition(self._topics.replies.name, partition)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        self.partition = partition

    def _move(self, partition: int) -> None:
        """The claim gave another partition: the reader moves to it, and requests follow (those in
        flight on the old one get their fail mode when their timeout passes)."""
        self._wanted = partition

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[int]:
        """The replies topic's partitions, as the broker says now (raises when it does not answer)."""
        # the metadata of every topic, fresh from the broker: the consumer's own holds only topics it
        # was told of (none yet; Tansu's answer held every topic anyway, Kafka's does not)
        cluster = await asyncio.wait_for(cluster_metadata(consumer), CHECK_EVERY_S * 2)
        self._broker_answered_at = time.monotonic()
        return sorted(cluster.partitions_for_topic(self._topics.replies.name) or ())

    def lost(self, exc: Exception) -> None:
        """Every waiter gets its fail mode at once; until the reader is back, requests get it without waiting."""
        self._reading.clear()
        self._lost_at = time.monotonic()
        log.error("the verdict reader failed (%s); waiting requests get their fail mode, and it restarts", describe(exc))
        self._fail_waiters()

    def _fail_waiters(self) -> None:
        for waiting in itertools.chain.from_iterable(w.values() for w in self._waiting.values()):
            if not waiting.done():
                waiting.set_exception(ReaderDown())
        for stream in list(self._streams.values()):
            stream.give_up("reader_down")

    async def read_with(self, consumer: AIOKafkaConsumer) -> None:
        checked = time.monotonic()
        while True:
            if self._wanted != self.partition:
                await self._read_from_end(consumer, self._wanted)
            batches = await consumer.getmany(timeout_ms=100)
            for record in itertools.chain.from_iterable(batches.values()):
                self._take(record)
            if time.monotonic() - checked > CHECK_EVERY_S:
                checked = time.monotonic()
                await self._check_broker(consumer)

    async def _check_broker(self, consumer: AIOKafkaConsumer) -> None:
        """Whether the broker answers (readiness); one that does not stops nothing: the reader keeps its position."""
        try:
            await self._partitions(consumer)
        except Exception as exc:  # noqa: BLE001 - aiokafka reconnects by itself; readiness reports the silence
            log.warning("the broker did not answer the verdict reader (%s)", describe(exc))

    def _take(self, record) -> None:
        """One fetched record: decoded and delivered if someone waits for it (or it does not say whom
        it answers), skipped otherwise."""
        self.read["records"] += 1
        self.read["bytes"] += len(record.value or b"")
        whom = next((value for name, value in record.headers or () if name == FOR_HEADER), None)
        if whom is not None and not self._awaited(whom):
            return
        self.read["decoded"] += 1
        try:
            verdict = VerdictEvent.model_validate_json(record.value)
        except ValidationError:
            log.warning("skipped a record on %s that is no verdict (offset %d)", record.topic, record.offset)
            return
        self.deliver(verdict)

    def _awaited(self, whom: bytes) -> bool:
        kind, *key = whom.decode("utf-8", "replace").split("\x1f")
        return len(key) == 3 and tuple(key) in (self._streams if kind == "s" else self._waiting)

"""Canary: a second model judges a deterministic sample of conversations and reply streams beside
the main one, off the enforcement path, and each pair of verdicts goes to the `canary` topic.

Not a Faust agent but a reader in a consumer group of its own (`Settings.canary_group`,
`topology/own_group.py`), so a slow canary pool falls behind alone and never holds back the
agents that enforce. It reads conversations, chunks and verdicts, all keyed (so co-partitioned)
by conversation id. Sampled events and chunks go to the canary's own actors (the
`<app id>-canary` pool); each main verdict of a sampled event waits for the canary's, or the
reverse (`workers/moderation/canary.py`). Nothing the canary says is sent to the verdict topic:
it never becomes an action. A record is committed once its pair is published or given up on, so
a restart or a rebalance replays what was not paired yet (a pair may then be published twice,
with the same `canary_id`).

Contained: the worker starts and enforces without waiting for the canary's actors, and the
canary joins its group once they load (`CanaryState.status` says where it is, in the worker's
readiness detail, which never depends on it). A record the canary's models fail on is narrowed
down and given up on alone (counted unpaired), never read again for ever. Pairs waiting are
bounded in count and bytes, and the canary judges at most `max_streams` reply streams at once.
The first time its group runs, each partition starts at the worker's start (by timestamp), so
it samples everything the main agents judged since, however long its models took to load.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from guardstream.schemas import CanaryRecord, ConversationEvent, TokenChunkEvent, VerdictEvent, answer_key
from guardstream.schemas.intake import RawRecord, decode
from guardstream.wire import metrics
from guardstream.topology.outcomes import is_transient
from guardstream.wire.errors import describe
from guardstream.topology.own_group import OwnGroupReader, bound, group_consumer
from guardstream.topology.wiring import Wiring
from guardstream.workers.moderation.canary import Pairing, category_outcomes, compared, sampled, stop_outcome
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.workers.moderation.stream_state import Staged, StreamRef, StreamState
from guardstream.workers.engines.narrowing import narrowed

log = logging.getLogger(__name__)
BATCH = 512
SWEEP_EVERY_S = 5.0


@dataclass(frozen=True)
class CanaryModels:
    """The canary pool's moderators; either may be None (that path has no canary)."""

    gen: GenModerator | None
    stream: StreamModerator | None

    @property
    def variants(self) -> set[str]:
        return {name for name in ("gen", "stream") if getattr(self, name) is not None}


def count(record: CanaryRecord) -> None:
    metrics.CANARY_PAIRS.labels(record.variant, record.main.risk_level.value, record.canary.risk_level.value).inc()
    for category, named_by in category_outcomes(record):
        metrics.CANARY_CATEGORIES.labels(record.variant, metrics.category(category), named_by).inc()
    if record.variant == "stream":
        outcome, delta = stop_outcome(record)
        metrics.CANARY_STOPS.labels(outcome).inc()
        if delta is not None:
            metrics.CANARY_STOP_OFFSET.observe(delta)


@dataclass
class CanaryState:
    """Where the canary is, for the worker's readiness detail (which never fails for it)."""

    status: str = "canary: loading its models"


def sample_secret(settings) -> bytes:
    secret = settings.canary_sample_secret
    if secret is not None:
        return secret.get_secret_value().encode()
    log.warning("canary: no GUARDSTREAM_CANARY_SAMPLE_SECRET; this worker samples with a random key of its own "
                "(give every worker the same one so that they sample the same conversations)")
    return secrets.token_bytes(32)


class CanaryReader:
    """The canary's state between batches: pairs waiting, the canary's own stream sessions (in
    memory: a restart replays their chunks, which were held uncommitted), and each partition's
    position."""

    def __init__(self, w: Wiring, models: CanaryModels):
        self.w, self.models, self.settings = w, models, w.settings
        canary = w.settings.canary
        self.share, self.secret = canary.sample, sample_secret(w.settings)
        self.pairing = Pairing(canary.join_timeout_s, canary.max_pending, max_bytes=int(canary.max_pending_mb * (1 << 20)))
        self.max_streams = canary.max_streams
        self.crowded_at = 0.0  # when a stream was last left out for max_streams (logged once a minute)
        self.streams: dict[str, tuple[int, object]] = {}  # the canary's stream entries: key → (partition, value)
        self.live: set[StreamRef] = set()  # the streams with a state entry among them (kept as they are written)
        self.positions: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.lock = asyncio.Lock()  # a batch and a rebalance never interleave
        self.swept_at = 0.0
        self.assigned: set[TopicPartition] | None = None  # a new assignment, not yet announced
        self.starts: dict[TopicPartition, int] = {}  # where its partitions start that aiokafka would not seek
        names = {"gen": [w.conversations], "stream": [w.chunks]}
        self.topics = [t.get_topic_name() for v in sorted(models.variants) for t in names[v]] + [w.verdicts.get_topic_name()]

    def forget(self) -> None:
        """Everything in memory: what it held is read again from the committed offsets."""
        self.pairing.clear()
        self.streams.clear()
        self.live.clear()
        self.positions.clear()

    async def handle(self, batches: dict[TopicPartition, list]) -> list[CanaryRecord]:
        chosen: dict[str, list[RawRecord]] = {}
        for tp, messages in batches.items():
            self.positions[tp] = messages[-1].offset + 1
            chosen.setdefault(tp.topic, []).extend(RawRecord.of(m)
                                                   for m in messages if sampled(m.key, self.share, self.secret))
        pairs = self._main(chosen.get(self.w.verdicts.get_topic_name(), []))
        if conversations := chosen.get(self.w.conversations.get_topic_name()):
            pairs += await self._gen(conversations)
        if chunks := chosen.get(self.w.chunks.get_topic_name()):
            pairs += await self._stream(chunks)
        return [p for p in pairs if p is not None]

    def _main(self, records: list[RawRecord]) -> list[CanaryRecord | None]:
        pairs = []
        for record in records:
            verdict = decode(record, VerdictEvent, self.settings.max_event_bytes)
            if isinstance(verdict, VerdictEvent) and verdict.model_variant in self.models.variants and compared(verdict):
                self.pairing.hold(verdict.answers(), (record.topic, record.partition), record.offset)
                pairs.append(self.pairing.offer("main", verdict))
        return pairs

    async def _gen(self, records: list[RawRecord]) -> list[CanaryRecord | None]:
        held = {}
        for record in records:
            event = decode(record, ConversationEvent, self.settings.max_event_bytes)
            if isinstance(event, ConversationEvent):  # one that is not has a dead letter from the main path
                held[(record.partition, record.offset)] = answer_key("e", event.tenant, event.conversation_id, event.event_id)
                self.pairing.hold(held[(record.partition, record.offset)], (record.topic, record.partition), record.offset)

        async def judge(batch: list[RawRecord]) -> list[VerdictEvent]:
            return (await self.models.gen.moderate(batch))[0]

        return [self.pairing.offer("canary", v) for v in await self._isolated(records, judge, held, "gen")]

    async def _stream(self, records: list[RawRecord]) -> list[CanaryRecord | None]:
        held, taken = {}, []
        live = set(self.live)
        for record in records:
            chunk = decode(record, TokenChunkEvent, self.settings.max_event_bytes)
            if not isinstance(chunk, TokenChunkEvent):
                continue
            ref = StreamRef(chunk.tenant, chunk.conversation_id, chunk.stream_id)
            if ref not in live and len(live) >= self.max_streams:  # its main verdict is given up on, unpaired
                self._crowded()
                continue
            live.add(ref)
            taken.append(record)
            held[(record.partition, record.offset)] = answer_key("s", chunk.tenant, chunk.conversation_id, chunk.stream_id)
            self.pairing.hold(held[(record.partition, record.offset)], (record.topic, record.partition), record.offset)

        async def judge(batch: list[RawRecord]) -> list[VerdictEvent]:
            staged = Staged(lambda key: self.streams.get(key, (0, None))[1])
            verdicts, _ = await self.models.stream.moderate(batch, staged)
            for key, (partition, value) in staged.writes.items():
                if value is None:
                    self.streams.pop(key, None)
                else:
                    self.streams[key] = (partition, value)
                if (ref := StreamRef.of_state_key(key)) is not None:
                    (self.live.discard if value is None else self.live.add)(ref)
            return verdicts

        return [self.pairing.offer("canary", v) for v in await self._isolated(taken, judge, held, "stream")
                if compared(v)]

    async def _isolated(self, records: list[RawRecord], judge: Callable[[list[RawRecord]], Awaitable[list[VerdictEvent]]],
                        held: dict[tuple[int, int], bytes], variant: str) -> list[VerdictEvent]:
        """The canary's verdicts on `records`. A batch its models fail on for good (not an unavailable
        pool, which gives `Error` verdicts, nor a transient error, which reads the batch again) is
        narrowed down record by record, in order; a record that fails alone is given up on, counted
        unpaired, and never read again."""
        async def given_up(record: RawRecord, exc: Exception) -> None:
            log.error("canary: %s[%d]@%d failed alone (%s); given up on, unpaired", record.topic, record.partition,
                      record.offset, describe(exc))
            if (record.partition, record.offset) in held and self.pairing.drop(held[(record.partition, record.offset)]) is not None:
                metrics.CANARY_UNPAIRED.labels(variant, "canary").inc()

        # the canary's failure is never the enforcement path's: a lasting one is narrowed, a transient one raised
        verdicts = await narrowed(records, judge, given_up, "canary", raises=is_transient) if records else []
        return [v for v in verdicts if v is not None]  # None: a record given up on

    def _crowded(self) -> None:
        if time.monotonic() - self.crowded_at > 60:
            self.crowded_at = time.monotonic()
            log.warning("canary: %d reply streams are being judged (max_streams); new sampled streams are left "
                        "out until some end", self.max_streams)

    def give_up(self) -> None:
        """Pairs alone past the timeout are dropped and counted; every few seconds, the canary's
        sessions of streams idle that long are dropped too (paired, given up on, or never ended)."""
        for key, entry in self.pairing.give_up():
            metrics.CANARY_UNPAIRED.labels("gen" if key.startswith(b"e") else "stream", entry.missing).inc()
        metrics.CANARY_WAITING.set(len(self.pairing.waiting))
        if time.monotonic() - self.swept_at < SWEEP_EVERY_S:
            return
        self.swept_at = time.monotonic()
        horizon = time.time() - self.settings.canary.join_timeout_s
        idle = [(ref, StreamState.model_validate(value)) for ref in self.live
                if (value := self.streams[ref.key()][1])["updated_at"] < horizon]
        for ref, state in idle:
            self.live.discard(ref)
            for key in ref.entries(state):
                self.streams.pop(key, None)

    def to_commit(self) -> dict[TopicPartition, int]:
        points = self.pairing.commit_points({(tp.topic, tp.partition): at for tp, at in self.positions.items()})
        wanted = {tp: points[(tp.topic, tp.partition)] for tp in self.positions}
        return {tp: at for tp, at in wanted.items() if self.committed.get(tp) != at}


class Rebalance(ConsumerRebalanceListener):
    """A partition taken away: what is paired so far is committed and the rest forgotten; every
    partition held after the rebalance is read again from its committed offset, or, the first
    time, from the worker's start."""

    def __init__(self, service: Canary, consumer: AIOKafkaConsumer):
        self.service = service
        self.consumer = consumer  # its own: the group can assign partitions before the service holds it

    async def on_partitions_revoked(self, revoked) -> None:
        async with self.service.reader.lock:
            await self.service.commit()
            self.service.reader.forget()

    async def on_partitions_assigned(self, assigned) -> None:
        reader, consumer = self.service.reader, self.consumer
        async with reader.lock:
            committed = await consumer.seek_to_committed(*assigned) if assigned else {}
            # aiokafka seeks only to a committed offset above 0, and resets the others to the end
            # (in the background, so a seek made now could be undone): where to start is settled
            # here, and sought in `step` once the consumer's own positions are done
            reader.starts = {tp: 0 for tp, at in committed.items() if at == 0}
            fresh = [tp for tp, at in committed.items() if at is None]
            if fresh:
                reader.starts.update(await self.from_start(consumer, fresh))
            reader.assigned = set(assigned)

    async def from_start(self, consumer: AIOKafkaConsumer, fresh: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The first offset of each partition written at or after the worker's start (none: its end)."""
        try:
            found = await consumer.offsets_for_times({tp: self.service.started_ms for tp in fresh})
        except Exception as exc:  # noqa: BLE001 - a broker without timestamps: what arrives from now on
            log.warning("canary: could not find the offsets at the worker's start (%s); reading from the topics' "
                        "ends", describe(exc))
            return {}
        return {tp: at.offset for tp, at in found.items() if at is not None}


class Canary(OwnGroupReader):
    """The canary's reader: it joins its group once `loading` (the canary pool's models, None when
    they could not be opened) is done."""

    label = "canary"
    wiring: Wiring  # these four are bound by `register`
    loading: Future
    state: CanaryState
    started_ms: int  # where a new group's partitions start: the worker's start
    reader: CanaryReader | None = None

    async def ready(self) -> bool:
        if self.reader is None and self.loading.done():
            models = self.loading.result()
            if models is None:
                self.state.status = "canary: off (its pool did not open)"
                return False
            self.reader = CanaryReader(self.wiring, models)
            self.state.status = "canary: joining its group"
        return self.reader is not None

    def new_consumer(self) -> AIOKafkaConsumer:
        settings = self.wiring.settings
        consumer = group_consumer(settings, self.wiring.bootstrap, settings.canary_group, auto_offset_reset="latest",
                                  # the same partitions of every topic to one member: an event and its verdict meet
                                  partition_assignment_strategy=(RangePartitionAssignor,))
        consumer.subscribe(self.reader.topics, listener=Rebalance(self, consumer))
        return consumer

    def forget(self) -> None:
        if self.reader is not None:
            self.reader.forget()
            self.reader.committed.clear()
            self.state.status = "canary: joining its group"

    async def commit(self) -> None:
        points = self.reader.to_commit()
        if points and self.consumer is not None:
            await self.consumer.commit(points)
            self.reader.committed.update(points)

    async def step(self, consumer: AIOKafkaConsumer) -> None:
        """A batch → canary verdicts → the pairs published → the commits."""
        reader, w = self.reader, self.wiring
        if reader.assigned is not None:  # newly assigned: where it reads from is settled before it says so
            assigned, reader.assigned = reader.assigned, None
            for tp in assigned:
                await consumer.position(tp)
            for tp, offset in reader.starts.items():
                consumer.seek(tp, offset)
            self.state.status = f"canary: reading {len(assigned)} partitions"
            log.info("canary: reading %d partitions of %s (sample %.1f%%)", len(assigned), ", ".join(reader.topics),
                     reader.share * 100)
        batches = await consumer.getmany(timeout_ms=200, max_records=BATCH)
        async with reader.lock:
            pairs = await reader.handle(batches)
            if pairs:
                await w.deliver([(w.canary, p.conversation_id, p.model_dump_json().encode()) for p in pairs])
                for pair in pairs:
                    count(pair)
            reader.give_up()
            await self.commit()


def register(w: Wiring, loading: Future) -> CanaryState:
    """The canary's reader, as a service of the app; its state says where it is."""
    state = CanaryState()
    w.app.service(bound(Canary, wiring=w, loading=loading, state=state, started_ms=int(time.time() * 1000)))
    return state

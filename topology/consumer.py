"""A Faust consumer that commits only offsets whose records were acked, and drops no record.

faust-streaming 0.15.3 can commit past records no agent has handled (upstream issues #606 and
#221); the chaos test saw it as runs of events without a verdict after a restart:
- it remembers the last offset read per partition and drops any record below it. A record
  prefetched before the seek to the committed offset (#221) arrives first, and the records
  between the committed offset and it are then dropped as "already read";
- it marks the offsets it jumped over as acked ("gaps", meant for compacted and transactional
  topics, which guardstream never consumes), so those dropped records were also committed;
- its commit check lets one unacked record at the head through, and is skipped entirely when
  the committed offset is 0;
- it checks a fetch's records against the active partitions as they are after the fetch, and
  drops those of a partition paused while the fetch was in flight (recovery pauses what it
  restores) without a seek: that partition's position is past them (`fetched`);
- its flow control clears every channel queue whenever it resumes, and recovery resumes it once
  more after the stream partitions are back in the fetch: records fetched in between and still
  queued are dropped, their partitions' positions past them (`refetch_cleared`). This is what
  the chaos test saw as a taking-over worker's first records never reaching its agents: the
  head of a partition lost with later records acked, or every record of it fetched and none
  delivered, until the rules below fetched it again 2 or 30 seconds later. Those records are
  fetched again from the first one dropped; what the agents had already taken is not.

Here the last-read offset is never remembered, so nothing is dropped and no gap is filled: a
prefetched record may be delivered twice, which verdict ids and stream `seq`s make harmless.
The committed offset moves only over a consecutive run of acked offsets that starts exactly at
it, so the worst case is a held offset that the next owner replays, never a skipped record. A
partition whose committed record stays unacked for `REFETCH_AFTER_S` while later ones are acked
lost that record on the way (agents ack each partition in order), and is fetched again from it.
A partition whose head has not moved for `STUCK_AFTER_S` while records lie beyond it (below the
high watermark, or below the fetch position: fetched and never acked), even with nothing after it
acked, is fetched again from it, and taken back into the fetch if Faust had left it out. A
partition without a committed offset starts from its earliest one, which is then the head.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP
from mode import Service

from guardstream.topology.faust_internals import HookedConsumer, HookedProducer, before_clear, queued_messages
from guardstream.topology.state import discard_stale, seal

log = logging.getLogger(__name__)
REFETCH_AFTER_S = 2.0  # a head still missing at the next commit check (acks come in order) was lost
STUCK_AFTER_S = 30.0  # a head neither acked nor passed while records lie beyond it: its partition stopped flowing


class StrictConsumer(HookedConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stalled: dict[TP, tuple[int, float]] = {}  # tp → (its unacked head, since when)
        self._stuck: dict[TP, tuple[int, float]] = {}  # tp → (its head with records beyond, since when)
        self._refetching: set[asyncio.Task] = set()
        self._unknown_heads: set[TP] = set()  # partitions whose earliest offset could not be read yet

    async def perform_seek(self) -> None:
        """Faust leaves the head unknown (None) where nothing or offset 0 was committed, and then
        commits whatever run is acked first; here such a partition's head is its earliest offset."""
        await super().perform_seek()
        self._unknown_heads = {tp for tp in self.assignment() if self.committed(tp) is None and not self.is_changelog(tp)}
        await self._learn_heads()

    async def _learn_heads(self) -> None:
        """The earliest offsets of partitions whose head is unknown. Until one is known, nothing of
        that partition is committed (its first acked run might lie past an unacked head); the timer
        asks again."""
        unknown = [tp for tp in self._unknown_heads if tp in self.assignment()]
        self._unknown_heads = set(unknown)
        if not unknown:
            return
        try:
            earliest = await self.earliest_offsets(*unknown)
        except Exception as exc:  # noqa: BLE001 - an exception here would stop the app's recovery
            log.warning("earliest offsets of %d partitions unknown (%s); nothing of them is committed until they "
                        "are known", len(unknown), exc)
            return
        for tp, offset in earliest.items():
            if offset is not None and self.committed(tp) is None:
                self.set_committed(tp, offset)
                self._unknown_heads.discard(tp)

    async def fetched(self, records: dict, active: set[TP] | None) -> dict:
        """Faust checks a fetch's records against the active partitions as they are *after* the fetch
        (the same set object, which `pause_partitions` changes while the fetch is in flight, as
        recovery does) and drops those of a partition paused meanwhile without a seek, its position
        already past them. Here such records are taken out and their partition sent back to the
        first of them, to be fetched again once it is resumed."""
        if records and active is not None:
            for tp in [tp for tp in records if tp not in active and tp not in self.buffered()]:
                dropped = records.pop(tp)
                if dropped:
                    log.info("%s[%d]: paused while offsets %d-%d were being fetched; fetching them again once it "
                             "resumes", tp.topic, tp.partition, dropped[0].offset, dropped[-1].offset)
                    await self._refetch(tp, dropped[0].offset)
        return records

    def refetch(self, dropped: Mapping[TP, int]) -> None:
        """Partitions whose records from these offsets on were dropped before their agents: each is
        fetched again from its first dropped record. Every record before it was taken from the queue
        by its agent (a partition's records are queued and taken in order), so none is handled twice."""
        for tp, offset in dropped.items():
            log.info("%s[%d]: queued records from offset %d dropped by Faust's flow control; fetching them again",
                     tp.topic, tp.partition, offset)
            task = asyncio.ensure_future(self._refetch(tp, offset))
            self._refetching.add(task)
            task.add_done_callback(self._refetching.discard)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """Recovery reads each changelog up to these: on Tansu they are sealed first (`state.seal`),
        so that the watermark lies past every record written before."""
        changelogs = [tp for tp in partitions if self.is_changelog(tp)]
        if changelogs and self.transport.seal_changelogs:
            await seal(self.app.producer, changelogs)
        highwaters = await super().highwaters(*partitions)
        discard_stale(self.app.tables.values(), highwaters)
        return highwaters

    def commit_offset(self, tp: TP) -> int | None:
        committed = self.committed(tp)
        if committed is None and tp in self._unknown_heads:
            return None
        offset = committable(self.acked(tp), self.acked_index(tp), committed)
        if offset is None and committed is not None and self.acked(tp):
            self._watch_lost_head(tp, committed)
        else:
            self._stalled.pop(tp, None)
        return offset

    def _watch_lost_head(self, tp: TP, head: int) -> None:
        """Later offsets of `tp` are acked and `head` is not: once that has lasted REFETCH_AFTER_S,
        `tp` is fetched again from `head` (the later records come twice, which is harmless)."""
        since = self._stalled.get(tp)
        if since is None or since[0] != head:
            self._stalled[tp] = (head, time.monotonic())
        elif time.monotonic() - since[1] >= REFETCH_AFTER_S:
            del self._stalled[tp]
            log.warning("%s[%d]: offset %d never reached its agents while later ones were acked; fetching again "
                        "from it", tp.topic, tp.partition, head)
            task = asyncio.ensure_future(self._refetch(tp, head))
            self._refetching.add(task)
            task.add_done_callback(self._refetching.discard)

    @Service.timer(REFETCH_AFTER_S)
    async def _watch_stuck_heads(self) -> None:
        try:
            await self._learn_heads()
            if not self.app.in_recovery:
                await self._fetch_stuck_heads()
        except Exception as exc:  # noqa: BLE001 - an exception in a timer would stop the app; the next tick retries
            log.warning("checking for stuck partitions failed (%s)", exc)

    async def _fetch_stuck_heads(self) -> None:
        """A partition can also lose its head with nothing after it acked (the chaos test saw one
        restarted worker never commit one partition while the others flowed): whenever records lie
        beyond a committed head that has not moved for STUCK_AFTER_S, the partition is fetched
        again from it, and taken back into the fetch if Faust had left it out. A slow batch that
        lasts that long is then delivered twice, which is harmless."""
        heads = {tp: head for tp in self.assignment() if not self.is_changelog(tp)
                 and (head := self.committed(tp)) is not None and head not in self.acked_index(tp)}
        ends = await self.highwaters(*heads) if heads else {}
        positions = {tp: await self._fetch_position(tp) for tp in heads}
        for tp in heads:  # records fetched past the head lie beyond it, even where the high watermark
            ends[tp] = max(ends.get(tp) or 0, positions[tp])  # lags (Tansu's does)
        now = time.monotonic()
        for tp in list(self._stuck):
            if tp not in heads or self._stuck[tp][0] != heads[tp] or (ends.get(tp) or 0) <= heads[tp]:
                del self._stuck[tp]
        for tp, head in heads.items():
            if (ends.get(tp) or 0) <= head:
                continue
            since = self._stuck.setdefault(tp, (head, now))[1]
            if now - since >= STUCK_AFTER_S:
                del self._stuck[tp]
                log.warning("%s[%d]: offset %d not acked for %.0fs with records up to %d beyond it (fetch position "
                            "%d: %s; fetching: %s); fetching again from it", tp.topic, tp.partition, head, now - since,
                            ends[tp], positions[tp], "unknown" if not positions[tp] else "fetched, never delivered"
                            if positions[tp] > head else "never fetched", tp in self.fetching())
                if tp not in self.paused():
                    self.buffered().discard(tp)
                    self.fetching().add(tp)
                await self._refetch(tp, head)

    async def _fetch_position(self, tp: TP) -> int:
        """Where the next fetch of `tp` starts (0 when the client cannot say, as during a rebalance)."""
        try:  # bounded: a position being reset waits for the broker
            return await asyncio.wait_for(self.position(tp), REFETCH_AFTER_S) or 0
        except Exception:  # noqa: BLE001 - the high watermark still counts
            return 0

    async def _refetch(self, tp: TP, head: int) -> None:
        try:
            if tp in self.assignment():
                await self.seek(tp, head)
        except Exception as exc:  # noqa: BLE001 - the next commit check tries again
            log.warning("%s[%d]: fetching again from %d failed (%s)", tp.topic, tp.partition, head, exc)


def committable(acked: list[int], acked_index: set[int], committed: int | None) -> int | None:
    """The offset to commit next (one past a consecutive run of acked offsets that starts at the
    committed one), or None; consumes that run from `acked` and `acked_index`."""
    if not acked:
        return None
    acked.sort()
    stale = [o for o in acked if committed is not None and o < committed]  # already committed
    del acked[: len(stale)]
    if not acked or (committed is not None and committed >= 0 and acked[0] != committed):
        return None
    end = 1
    while end < len(acked) and acked[end] == acked[end - 1] + 1:
        end += 1
    run = acked[:end]
    del acked[:end]
    acked_index.difference_update(run)
    acked_index.difference_update(stale)
    return run[-1] + 1


def refetch_cleared(app) -> None:
    """Before the app's flow control clears its queues (each time it resumes), the partitions of
    the records still queued are sent back to the first of them (`StrictConsumer.refetch`):
    records Faust would drop are fetched again, and only those."""
    def refetch_queued() -> None:
        lowest: dict[TP, int] = {}
        for message in queued_messages(app.flow_control):
            # its tp is aiokafka's TopicPartition, not Faust's TP: equal, not an instance
            tp = TP(message.tp.topic, message.tp.partition)
            lowest[tp] = min(lowest.get(tp, message.offset), message.offset)
        if lowest:
            app.consumer.refetch(lowest)

    before_clear(app.flow_control, refetch_queued)


class IdempotentProducer(HookedProducer):
    """acks=all from the idempotent producer (Faust's is idempotent only inside transactions): a
    send retried across a leader change writes no second copy. Tansu has no idempotent producer."""

    def client_settings(self, extra: dict) -> dict:
        return {**extra, "acks": "all", "enable_idempotence": True} if self.transport.idempotent else extra


class StrictTransport(aiokafka_driver.Transport):
    Consumer = StrictConsumer
    Producer = IdempotentProducer
    fetch_max_wait_ms = 1500  # the app sets its own (settings.kafka.fetch_max_wait_ms)
    seal_changelogs = False  # the app sets it on Tansu (settings.kafka.broker_kind)
    idempotent = False  # the app sets it on Kafka (settings.kafka.broker_kind)

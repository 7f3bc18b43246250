"""A gateway's own partition of the replies topic, claimed through a consumer group.

A `Guard` with no fixed `reply_partition` joins the group `<prefix>gateways` on the replies
topic. The group only shares the partitions out: its consumer fetches nothing (what it is given
is paused) and the Guard's reader reads its partition by itself, so a rebalance never stalls a
verdict. Each member's metadata names the partition it holds, and the assignor leaves every
member that partition: gateways that come and go move nobody's replies. A new member gets a free
partition; with more gateways than partitions, the least shared one (those gateways then skip
each other's verdicts: correct, only more reading).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from guardstream.wire.errors import describe
from guardstream.wire.kafka_internals import group_errors_raised
from guardstream.wire.settings import KafkaSettings

log = logging.getLogger(__name__)
CLAIM_WAIT_S = 30.0


def homes(partitions: list[int], held: Mapping[str, int | None]) -> dict[str, int | None]:
    """Each member's partition: the one it holds when no member sorted before it holds it too, else
    a free one, else the least shared (None only when the topic has no partitions)."""
    owners: dict[int, int] = {}
    out: dict[str, int | None] = {}
    for member in sorted(held):
        if held[member] in partitions and held[member] not in owners:
            out[member], owners[held[member]] = held[member], 1
    free = [p for p in partitions if p not in owners]
    for member in sorted(m for m in held if m not in out):
        p = free.pop(0) if free else min(partitions, key=lambda q: (owners.get(q, 0), q), default=None)
        out[member] = p
        if p is not None:
            owners[p] = owners.get(p, 0) + 1
    return out


class HomeAssignor(AbstractPartitionAssignor):
    """One partition per member, kept across rebalances (the member's metadata says which it holds)."""

    name = "guardstream-home"
    version = 0

    def __init__(self, topic: str):
        self.topic = topic
        self.home: int | None = None

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), b"" if self.home is None else str(self.home).encode())

    def assign(self, cluster, members: Mapping[str, ConsumerProtocolMemberMetadata]) -> dict:
        held = {m: int(meta.user_data) if meta.user_data and meta.user_data.isdigit() else None
                for m, meta in members.items()}
        partitions = sorted(cluster.partitions_for_topic(self.topic) or ())
        if len(members) > len(partitions):
            log.warning("%d gateways share the %d partitions of %s: some read each other's verdicts "
                        "(raise GUARDSTREAM_REPLY_PARTITIONS)", len(members), len(partitions), self.topic)
        return {m: ConsumerProtocolMemberAssignment(self.version, [(self.topic, [p])] if p is not None else [], b"")
                for m, p in homes(partitions, held).items()}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        given = [p for topic, partitions in assignment.assignment if topic == self.topic for p in partitions]
        self.home = given[0] if given else None


class ReplyClaim(ConsumerRebalanceListener):
    """Holds a partition of the replies topic while it runs; `moved(home)` hears of every change."""

    def __init__(self, bootstrap: str, kafka: KafkaSettings, topic: str, moved: Callable[[int], None]):
        self._assignor = HomeAssignor(topic)
        self._topic, self._moved = topic, moved
        self._consumer = group_errors_raised(AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=kafka.gateway_group, enable_auto_commit=False,
            partition_assignment_strategy=(self._assignor,), heartbeat_interval_ms=1000,
            session_timeout_ms=int(kafka.session_timeout_s * 1000),
            rebalance_timeout_ms=int(kafka.rebalance_timeout_s * 1000), **kafka.client_options()))
        self._claimed = asyncio.Event()
        self._home: int | None = None
        self._polling: asyncio.Task | None = None

    async def start(self) -> int:
        """Join the group and return the partition it gives (raises when none comes in time)."""
        await self._consumer.start()
        self._consumer.subscribe([self._topic], listener=self)
        self._polling = asyncio.create_task(self._poll(), name="guardstream-reply-claim")
        try:
            await asyncio.wait_for(self._claimed.wait(), CLAIM_WAIT_S)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"no partition of {self._topic} was given to this gateway within {CLAIM_WAIT_S:.0f}s: "
                               f"start a guardstream worker (it creates the topics), check GUARDSTREAM_TOPIC_PREFIX, "
                               f"or name one with reply_partition") from None
        return self._home

    async def stop(self) -> None:
        if self._polling is not None:
            self._polling.cancel()
            await asyncio.gather(self._polling, return_exceptions=True)
        await asyncio.gather(asyncio.wait_for(self._consumer.stop(), 5), return_exceptions=True)

    async def _poll(self) -> None:
        """Polls (nothing is fetched: the partition is paused) so that the group keeps this member."""
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except Exception as exc:  # noqa: BLE001 - aiokafka reconnects; the reader's readiness reports the silence
                log.warning("the reply partition claim could not poll its group (%s)", describe(exc))
                await asyncio.sleep(1)

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        self._consumer.pause(*assigned)
        home = self._assignor.home
        if home is not None and home != self._home:
            if self._home is not None:
                log.warning("this gateway's reply partition moved from %d to %d", self._home, home)
            self._home = home
            self._moved(home)
        self._claimed.set()

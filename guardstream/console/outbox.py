"""Decisions onto the review-decisions topic, never lost: a decision is stored first (its row is
the outbox), published, then marked published. The console publishes each as it is made, and
every few seconds publishes whatever is still unmarked (the broker was away, the console died
between the two). An event may so be published twice; it carries its decision's id, and the
follow-up action's id derives from it."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from guardstream.topology.settings import Settings
from guardstream.wire.topics import topics_for
from guardstream.workers.sinks.review import ReviewStore, decision_event

log = logging.getLogger(__name__)


class DecisionOutbox:
    def __init__(self, store: ReviewStore, settings: Settings, bootstrap: str, timeout_s: float = 5.0, every_s: float = 5.0):
        self.store = store
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topics_for(settings.kafka).review_decisions.name
        self.timeout_s = timeout_s
        self.every_s = every_s
        self.producer: AIOKafkaProducer | None = None
        self.failing: str | None = None  # why the last publish failed; None once one succeeds
        self._starting = asyncio.Lock()  # one producer, however many requests publish at once

    async def connected(self) -> AIOKafkaProducer:
        """The producer, started on first use (and again after a failed start): the console serves,
        and stores decisions, while the broker is away."""
        async with self._starting:
            if self.producer is None:
                producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                            request_timeout_ms=int(self.timeout_s * 1000),
                                            **self.settings.kafka.client_options())
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self.producer = producer
            return self.producer

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def publish(self, rows: list[dict]) -> bool:
        """The decisions of `rows` (`DECIDED` rows) on the topic and marked published; False, with
        `failing` saying why, when the broker did not take them all in time (they stay unmarked).
        No rows: whether the broker can be reached."""
        try:
            async with asyncio.timeout(self.timeout_s):
                producer = await self.connected()
                sent = [await producer.send(self.topic, event.model_dump_json().encode(), key=event.conversation_id.encode())
                        for event in map(decision_event, rows)]
                await asyncio.gather(*sent)
        except Exception as exc:  # the broker's errors, and the timeout: the rows wait for the next round
            self.failing = f"publishing decisions on {self.topic}: {type(exc).__name__}: {exc}"
            log.warning("review console: %s; they stay in the outbox", self.failing)
            return False
        if rows:
            await self.store.mark_published([row["decision_id"] for row in rows])
        self.failing = None
        return True

    async def run(self) -> None:
        """Publish what is unpublished (or reach the broker, when nothing is), every `every_s`, until
        cancelled; a failure waits a round."""
        while True:
            try:
                while await self.publish(rows := await self.store.unpublished()) and rows:
                    pass
            except Exception as exc:  # the database away: the next round tries again
                log.warning("review console: reading the outbox: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.every_s)

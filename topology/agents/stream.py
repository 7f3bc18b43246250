"""Stream: reply chunks → chunk and stream verdicts, through the Stream pool.

Streams live in the `stream-state` table as small entries (`workers/moderation/stream_state.py`),
so a worker that takes over a partition can rebuild their sessions; a batch's writes are applied
after the verdicts it led to were delivered (a crash in between replays, never skips)."""

from __future__ import annotations

import asyncio
import logging
import time

from guardstream.schemas.intake import RawRecord
from guardstream.wire import metrics
from guardstream.topology.outcomes import is_transient
from guardstream.wire.errors import describe
from guardstream.topology.wiring import Wiring, guarded
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.workers.moderation.stream_state import Staged, StreamRef, idle_entries

log = logging.getLogger(__name__)


class StreamAgent:
    """The agent's state between batches: the table, the streams waiting behind a gap (which a timer
    re-checks), when partitions were last taken over, and a lock that keeps the agent and the
    timers apart."""

    def __init__(self, w: Wiring, moderator: StreamModerator):
        self.w, self.moderator = w, moderator
        self.states = w.table("stream-state")
        self.waiting: set[StreamRef] = set()
        self.lock = asyncio.Lock()
        self.recovered_at = 0.0  # when this worker last took partitions over: gap waits restart from there

    async def _apply(self, staged: Staged) -> None:
        await self.states.write(staged.writes)
        for key, (_, value) in staged.writes.items():
            if (ref := StreamRef.of_state_key(key)) is not None:
                (self.waiting.add if value and value["held"] else self.waiting.discard)(ref)

    async def judge(self, records: list[RawRecord], release: list[StreamRef] = ()) -> None:
        """Judge `records`, and release the chunks held in the streams `release` names."""
        async with self.lock:
            began = time.perf_counter()
            staged = Staged(self.states.get)
            produced, letters = await self.moderator.moderate(records, staged, release, waits_from=self.recovered_at)
            await self.w.deliver(self.w.verdict_sends(produced) + [self.w.dead(d) for d in letters])
            await self._apply(staged)
            if records:
                metrics.STREAM_BATCH_SECONDS.observe(time.perf_counter() - began)
                metrics.BATCH_RECORDS.labels("stream").observe(len(records))

    async def find_held_chunks(self) -> None:
        """After each rebalance: streams with held chunks are found from the table (a restarted or
        new owner releases them too), and only for the partitions this worker owns."""
        self.recovered_at = time.time()
        self.w.restore_owned(self.states, self.w.chunks)
        self.waiting = {ref for key, _, value in self.states.items()
                        if (ref := StreamRef.of_state_key(key)) is not None and value["held"]}
        log.info("stream table restored: %d entries; %d streams hold chunks behind a gap", len(self.states), len(self.waiting))

    async def release_gaps(self) -> None:
        """Chunks held behind a gap are released (and the gap reported) once the wait is over,
        one stream at a time, so one that fails does not hold back the others. Held chunks whose
        release failed for good become dead letters; the stream goes on."""
        for ref in list(self.waiting):
            try:
                await self.judge([], [ref])
            except Exception as exc:  # noqa: BLE001 - transient: the next tick retries; the others go on
                if is_transient(exc):
                    log.warning("releasing held chunks of stream %s failed (%s); retrying next tick", ref, describe(exc))
                    continue
                log.error("releasing held chunks of stream %s failed (%s); dead-lettering them", ref, describe(exc))
                async with self.lock:
                    staged = Staged(self.states.get)
                    await self.w.send_letters(self.moderator.drop_held(staged, ref, describe(exc)))
                    await self._apply(staged)

    async def forget_streams(self) -> None:
        """Streams idle past stream_idle_ttl_s leave the table with tombstones for all their
        entries; a chunk of one that comes later starts afresh."""
        horizon, idle = time.time() - self.w.settings.stream.idle_ttl_s, {}
        async with self.lock:  # the agent waits; the other agents get their turns during the scan
            async for item in self.states.scan():
                idle.update(idle_entries([item], horizon))
            await self.states.write(idle)


def register(w: Wiring, stream_moderator: StreamModerator) -> None:
    agent = StreamAgent(w, stream_moderator)
    agent.states.table.on_recover(agent.find_held_chunks)

    @w.app.agent(w.chunks, name="stream")
    async def stream_agent(stream):
        await w.settled("stream", stream, w.settings.stream.batch_size, w.settings.stream.batch_wait_ms / 1000, agent.judge)

    w.app.timer(interval=1.0)(guarded("release_gaps", agent.release_gaps))
    w.app.timer(interval=min(60.0, w.settings.stream.idle_ttl_s))(guarded("forget_streams", agent.forget_streams))

"""Stream: reply chunks → chunk and stream verdicts, through the Stream pool.

Streams live in the `stream-state` table as small entries (`workers/moderation/stream_state.py`),
so a worker that takes over a partition can rebuild their sessions; a batch's writes are applied
after the verdicts it led to were delivered (a crash in between replays, never skips)."""

from __future__ import annotations

import asyncio
import logging
import time

from guardstream.schemas.intake import RawRecord
from guardstream.topology.outcomes import describe, is_transient
from guardstream.topology.wiring import Wiring, guarded
from guardstream.workers.moderation.stream_moderation import StreamModerator
from guardstream.workers.moderation.stream_state import Staged, StreamRef, idle_entries
from guardstream.topology import metrics

log = logging.getLogger(__name__)


def register(w: Wiring, stream_moderator: StreamModerator) -> None:
    app, settings, deliver, dead, settled = w.app, w.settings, w.deliver, w.dead, w.settled
    send_letters, restore_owned, verdicts, chunks = w.send_letters, w.restore_owned, w.verdicts, w.chunks

    # `waiting` holds the streams with chunks held behind a gap, which a timer re-checks;
    # `stream_lock` keeps the agent and the timers apart.
    stream_states = w.table("stream-state")
    waiting: set[StreamRef] = set()
    stream_lock = asyncio.Lock()
    recovered_at = 0.0  # when this worker last took partitions over: gap waits restart from there

    async def apply(staged: Staged) -> None:
        await stream_states.write(staged.writes)
        for key, (_, value) in staged.writes.items():
            if (ref := StreamRef.of_state_key(key)) is not None:
                (waiting.add if value and value["held"] else waiting.discard)(ref)

    async def judge_chunks(records: list[RawRecord], release: list[StreamRef] = ()) -> None:
        """Judge `records`, and release the chunks held in the streams `release` names."""
        async with stream_lock:
            began = time.perf_counter()
            staged = Staged(stream_states.get)
            produced, letters = await stream_moderator.moderate(records, staged, release, waits_from=recovered_at)
            await deliver([(verdicts, v.conversation_id, v.model_dump_json().encode()) for v in produced]
                          + [dead(d) for d in letters])
            await apply(staged)
            if records:
                metrics.STREAM_BATCH_SECONDS.observe(time.perf_counter() - began)
                metrics.BATCH_RECORDS.labels("stream").observe(len(records))

    @stream_states.table.on_recover
    async def find_held_chunks() -> None:
        """After each rebalance: streams with held chunks are found from the table (a restarted or
        new owner releases them too), and only for the partitions this worker owns."""
        nonlocal recovered_at
        recovered_at = time.time()
        restore_owned(stream_states, chunks)
        waiting.clear()
        waiting.update(ref for key, _, value in stream_states.items()
                       if (ref := StreamRef.of_state_key(key)) is not None and value["held"])
        log.info("stream table restored: %d entries; %d streams hold chunks behind a gap", len(stream_states), len(waiting))

    @app.agent(chunks, name="stream")
    async def stream_agent(stream):
        await settled("stream", stream, settings.stream_batch_size, settings.stream_batch_wait_ms / 1000, judge_chunks)

    async def release_gaps() -> None:
        """Chunks held behind a gap are released (and the gap reported) once the wait is over,
        one stream at a time, so one that fails does not hold back the others. Held chunks whose
        release failed for good become dead letters; the stream goes on."""
        for ref in list(waiting):
            try:
                await judge_chunks([], [ref])
            except Exception as exc:  # noqa: BLE001 - transient: the next tick retries; the others go on
                if is_transient(exc):
                    log.warning("releasing held chunks of stream %s failed (%s); retrying next tick", ref, describe(exc))
                    continue
                log.error("releasing held chunks of stream %s failed (%s); dead-lettering them", ref, describe(exc))
                async with stream_lock:
                    staged = Staged(stream_states.get)
                    await send_letters(stream_moderator.drop_held(staged, ref, describe(exc)))
                    await apply(staged)

    app.timer(interval=1.0)(guarded("release_gaps", release_gaps))

    async def forget_streams() -> None:
        """Streams idle past stream_idle_ttl_s leave the table with tombstones for all their
        entries; a chunk of one that comes later starts afresh."""
        async with stream_lock:
            await stream_states.write(idle_entries(stream_states.items(), time.time() - settings.stream_idle_ttl_s))

    app.timer(interval=min(60.0, settings.stream_idle_ttl_s))(guarded("forget_streams", forget_streams))

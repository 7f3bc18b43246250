"""Gen: conversations → verdicts (and dead letters), through the Gen pool."""

from __future__ import annotations

import time

from guardstream.schemas.intake import RawRecord
from guardstream.wire import metrics
from guardstream.topology.wiring import Wiring
from guardstream.workers.moderation.gen_moderation import GenModerator


class Gen:
    def __init__(self, w: Wiring, moderator: GenModerator):
        self.w, self.moderator = w, moderator

    async def moderate(self, records: list[RawRecord]) -> None:
        began = time.perf_counter()
        produced, letters = await self.moderator.moderate(records)
        await self.w.deliver(self.w.verdict_sends(produced) + [self.w.dead(d) for d in letters])
        metrics.GEN_BATCH_SECONDS.observe(time.perf_counter() - began)
        metrics.BATCH_RECORDS.labels("gen").observe(len(records))


def register(w: Wiring, moderator: GenModerator) -> None:
    gen = Gen(w, moderator)

    @w.app.agent(w.conversations, name="gen")
    async def gen_agent(stream):
        # sized by the pool the worker joined (its actors and their batch), not by this worker's settings
        await w.settled("gen", stream, moderator.pool.records_per_batch, w.settings.gen.batch_wait_ms / 1000,
                        gen.moderate, w.settings.gen.batches_in_flight)

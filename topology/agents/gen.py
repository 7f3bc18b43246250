"""Gen: conversations → verdicts (and dead letters), through the Gen pool."""

from __future__ import annotations

import time

from guardstream.schemas.intake import RawRecord
from guardstream.topology.wiring import Wiring
from guardstream.workers.moderation.gen_moderation import GenModerator
from guardstream.topology import metrics


def register(w: Wiring, moderator: GenModerator) -> None:
    app, settings, deliver, dead, settled = w.app, w.settings, w.deliver, w.dead, w.settled
    conversations = w.conversations

    async def moderate_conversations(records: list[RawRecord]) -> None:
        began = time.perf_counter()
        produced, letters = await moderator.moderate(records)
        await deliver(w.verdict_sends(produced) + [dead(d) for d in letters])
        metrics.GEN_BATCH_SECONDS.observe(time.perf_counter() - began)
        metrics.BATCH_RECORDS.labels("gen").observe(len(records))

    @app.agent(conversations, name="gen")
    async def gen(stream):
        # sized by the pool the worker joined (its actors and their batch), not by this worker's settings
        await settled("gen", stream, moderator.pool.records_per_batch, settings.gen_batch_wait_ms / 1000,
                      moderate_conversations)

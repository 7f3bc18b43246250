"""Judging a labelled set through a running deployment (`--through pipeline`): each item is sent
as a gateway sends it (`Guard.moderate`), so the numbers are those of the broker, the agents and
the pool as they run. An item without a verdict in time (the tenant's fail mode answered) is an
`Error`, and its latency is the caller's wait. The marked unsafe replies are streamed as a
gateway streams a reply, for their timeliness."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from guardstream.client import Guard
from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import Prediction, yes_no
from guardstream.evaluation.timeliness import NO_VERDICT, reply_ids
from guardstream.schemas import ConversationEvent, Moderate, Role


async def judge(items: list[LabelledItem], guard: Guard, tenant: str, concurrency: int = 16,
                progress: Callable[[int, int], None] = lambda done, total: None) -> list[Prediction]:
    """The deployment's prediction for each item, in order, `concurrency` in flight at once."""
    slots, done = asyncio.Semaphore(concurrency), [0]

    async def one(item: LabelledItem) -> Prediction:
        event = ConversationEvent(event_id=uuid.uuid4().hex, conversation_id=f"eval-{uuid.uuid4().hex}", tenant=tenant,
                                  moderate=Moderate(item.kind), messages=item.messages, language=item.language)
        async with slots:
            began = time.perf_counter()
            outcome = await guard.moderate(event)
            latency_ms = (time.perf_counter() - began) * 1000
        done[0] += 1
        progress(done[0], len(items))
        v = outcome.verdict
        if v is None:
            return Prediction("Error", latency_ms=latency_ms)
        return Prediction(v.risk_level.value, tuple(v.categories), yes_no(v.refusal), latency_ms, v.probabilities)

    return list(await asyncio.gather(*(one(item) for item in items)))


PIECE = 16  # reply tokens a chunk carries, as a generator streams them


async def stream_stops(replies: list[LabelledItem], guard: Guard, tokenizer, tenant: str, concurrency: int = 16,
                       progress: Callable[[int, int], None] = lambda done, total: None) -> list[int | str | None]:
    """Where the deployment stops each reply, streamed as a gateway streams it (`Guard.stream`, Qwen3
    token ids, PIECE at a time): its whole-stream verdict's stop token (observe mode: where it would
    have stopped), None where it never stopped, NO_VERDICT where that verdict never came."""
    slots, done = asyncio.Semaphore(concurrency), [0]

    async def one(item: LabelledItem) -> int | str | None:
        prompt = next(m.content for m in reversed(item.messages) if m.role is Role.user)
        ids = reply_ids(tokenizer, item)
        async with slots, guard.stream(f"eval-{uuid.uuid4().hex}", prompt, tenant=tenant,
                                       language=item.language) as stream:
            for start in range(0, len(ids), PIECE):  # every piece, even after a stop: the report's stop is the first
                await stream.push(ids[start:start + PIECE])
            outcome = await stream.finish()
        done[0] += 1
        progress(done[0], len(replies))
        final = outcome.verdict
        if final is None or final.stream is None:
            return NO_VERDICT
        return final.stream.stop_token if final.stream.stop_token is not None else final.stream.would_stop_token

    return list(await asyncio.gather(*(one(item) for item in replies)))

"""Dynamic batching: requests from concurrent callers are gathered into engine batches, up to
`max_batch` items or `max_wait_s` after the first one, and run one batch at a time off the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    def __init__(self, run: Callable[[list[In]], list[Out]], max_batch: int, max_wait_s: float):
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self._queue: asyncio.Queue[tuple[In, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self.batches_run = 0

    async def submit(self, items: list[In]) -> list[Out]:
        if self._queue is None:  # created on first use, inside the loop that serves it
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._serve())
        futures = [asyncio.get_running_loop().create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        return list(await asyncio.gather(*futures))

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic())))
                except asyncio.TimeoutError:
                    break
            try:
                results = await asyncio.to_thread(self.run, [item for item, _ in batch])
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
            except Exception as exc:  # the callers get the error; the batcher keeps serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            self.batches_run += 1

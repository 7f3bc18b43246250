"""A batch that fails is run again one item at a time, so a poison input fails alone and never takes
its batch-mates down. One narrowing for every caller: `narrowed` for the agents (their steps await
Kafka, and they retry and dead-letter around it), `one_at_a_time` for the engines and the Gen
actors, whose steps are plain functions."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
Item, Result = TypeVar("Item"), TypeVar("Result")


def never(_exc: Exception) -> bool:
    return False


async def narrowed(items: list[Item], run: Callable[[list[Item]], Awaitable[list[Result]]],
                   failed: Callable[[Item, Exception], Awaitable[Result]], what: str,
                   raises: Callable[[Exception], bool] = never) -> list[Result]:
    """`run(items)`; when it raises, each item is run alone, and one that fails alone gets
    `failed(item, exc)`. An exception that `raises` names is raised at once: no item would fare better."""
    try:
        return await run(items)
    except Exception as exc:  # noqa: BLE001 - narrowed down below; each failing item gets its own result
        if raises(exc):
            raise
        if len(items) == 1:
            return [await failed(items[0], exc)]
        log.warning("%s failed on a batch of %d (%s: %s); running them one at a time", what, len(items),
                    type(exc).__name__, str(exc)[:300])
        return [result for item in items for result in await narrowed([item], run, failed, what, raises)]


def one_at_a_time(items: list[Item], run: Callable[[list[Item]], list[Result]],
                  failed: Callable[[Item, Exception], Result], what: str,
                  raises: Callable[[Exception], bool] = never) -> list[Result]:
    """`narrowed` with plain functions, run to its end here: nothing in it waits, so its coroutine
    finishes at the first step."""
    async def run_now(batch: list[Item]) -> list[Result]:
        return run(batch)

    async def failed_now(item: Item, exc: Exception) -> Result:
        return failed(item, exc)

    steps = narrowed(items, run_now, failed_now, what, raises)
    try:
        steps.send(None)
    except StopIteration as finished:
        return finished.value
    raise RuntimeError("a narrowing of plain functions waited")  # nothing in it awaits a future

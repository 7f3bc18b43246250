"""A batch that fails is run again one item at a time, so a poison input fails alone and never takes
its batch-mates down: the engines' and the Gen actors' way (an agent's, which also retries
transient failures and dead-letters, is `topology/outcomes.py`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
Item, Result = TypeVar("Item"), TypeVar("Result")


def one_at_a_time(items: list[Item], run: Callable[[list[Item]], list[Result]],
                  failed: Callable[[Item, Exception], Result], what: str,
                  fatal: tuple[type[Exception], ...] = ()) -> list[Result]:
    """`run(items)`; when it raises, each item is run alone, and one that fails alone gets
    `failed(item, exc)`. An exception of a `fatal` type is raised at once: no item would fare better."""
    try:
        return run(items)
    except fatal:
        raise
    except Exception as exc:  # noqa: BLE001 - narrowed down below; each failing item gets its own result
        if len(items) == 1:
            return [failed(items[0], exc)]
        log.warning("%s failed on a batch of %d (%s); running them one at a time", what, len(items), exc)
        return [result for item in items for result in one_at_a_time([item], run, failed, what, fatal)]

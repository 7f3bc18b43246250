"""Waiting on a condition instead of sleeping a fixed time: as short as the system allows, as long
as the timeout says."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """The first truthy value `condition` returns; AssertionError naming `what` if none comes in time."""
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
    return found

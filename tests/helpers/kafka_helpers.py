"""Reading and producing in integration tests, over the real broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from guardstream.kafka_io import produce_lines, records
from guardstream.topology.settings import Settings


def produce(settings: Settings, bootstrap: str, events: list[dict], role: str = "conversations") -> None:
    asyncio.run(produce_lines(settings, bootstrap, role, [json.dumps(e) for e in events]))


def read_all(settings: Settings, bootstrap: str, role: str, keep: Callable[[dict], bool] = lambda v: True,
             idle_timeout_s: float = 3) -> list[dict]:
    """Every matching record of a topic from the beginning, until none arrives for idle_timeout_s."""

    async def run() -> list[dict]:
        found = []
        async for message in records(settings, bootstrap, role, idle_timeout_s=idle_timeout_s):
            value = json.loads(message.value)
            if keep(value):
                found.append(value)
        return found

    return asyncio.run(run())

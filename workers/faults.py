"""Injected faults, for tests only: `GUARDSTREAM_FAULTS="deliver=3,pool=2,audit=1"` makes each named
point fail that many times with a transient `InjectedFault`, then work. Off by default; when armed,
the worker says so loudly at start.

Points: `deliver` (producing verdicts, actions and dead letters), `pool` (the Gen and Stream pool
calls), `audit` (the audit store write).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
POINTS = ("deliver", "pool", "audit")
_remaining: dict[str, int] = {}


class InjectedFault(ConnectionError):
    """Transient by design, like a dropped connection: callers retry it."""


def parse(spec: str) -> dict[str, int]:
    counts = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        point, _, times = part.partition("=")
        if point not in POINTS or not times.isdigit():
            raise ValueError(f"fault {part!r}: use POINT=TIMES with POINT one of {', '.join(POINTS)}")
        counts[point] = int(times)
    return counts


def arm(spec: str) -> None:
    _remaining.clear()
    _remaining.update(parse(spec))
    if _remaining:
        log.warning("FAULT INJECTION IS ON (%s): for tests only, never in production", spec)


def hit(point: str) -> None:
    """Raise while `point` has injected failures left."""
    if _remaining.get(point, 0) > 0:
        _remaining[point] -= 1
        raise InjectedFault(f"injected {point} fault ({_remaining[point]} more to come)")

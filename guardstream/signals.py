"""SIGTERM and SIGINT before Faust's own handlers are installed: SystemExit, so `with` blocks stop
the children they started (the embedded broker).

A handler raises wherever the main thread is between two bytecodes, and there CPython may ignore
the exception: inside a finalizer or a weakref callback it is printed as "Exception ignored" and
the start goes on (a CI run saw a worker signalled during its start run on). So the signal is also
remembered: a start checks it before each long phase (`leave_if_signalled`), and the worker once
Faust's own handlers are in (`signalled`, `runtime.GracedWorker`), so none is lost in between."""

from __future__ import annotations

import signal

_signalled: list[int] = []


def exit_on_signals() -> None:
    """SIGTERM and SIGINT raise SystemExit (and are remembered for `leave_if_signalled`)."""
    def leave(signum, _frame):
        _signalled.append(signum)
        raise SystemExit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, leave)


def signalled() -> int | None:
    """The first SIGTERM or SIGINT that arrived, if one did."""
    return _signalled[0] if _signalled else None


def leave_if_signalled() -> None:
    """Raise the SystemExit of a signal that arrived, in case its own was ignored where it landed."""
    if (signum := signalled()) is not None:
        raise SystemExit(128 + signum)

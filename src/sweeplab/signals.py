"""Ctrl-C and SIGTERM: a run ends KILLED with the signal named, wherever it executes.

The console script owns both signals for its whole life (``take_over``); a run
started from a notebook or a sweep's worker catches them while it trains and
gives the previous handlers back (``catch``, ``restore``). Lightning turns a
signal into a graceful stop and ``sys.exit(1)``; ``received`` says which came.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from sweeplab.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals this process received: Lightning hides them behind sys.exit(1)
_owned = False  # set by take_over(): the console script owns SIGINT/SIGTERM, a notebook does not


def _interrupt(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise Interrupted(signum)


def _exit_now(signum: int, frame: Any) -> None:
    """After a run is closed nothing is left to save: leave at once with the signal's
    exit code, rather than raise into interpreter shutdown (a traceback from atexit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def _on_signal(handler: Any) -> None:
    for signum in SIGNALS:
        signal.signal(signum, handler)


def take_over() -> None:
    """For the console script: every signal from now on interrupts, exit 128 + its number."""
    global _owned
    _owned = True
    _on_signal(_interrupt)


def catch() -> dict[int, Any]:
    """Interrupt the run on either signal; return the handlers replaced (signals reach
    only the main thread: elsewhere nothing changes)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _received.clear()
    _on_signal(_interrupt)
    return previous


def restore(previous: dict[int, Any]) -> None:
    """A notebook or a sweep worker gets its own handlers back; the console script keeps its own."""
    if _owned:
        return
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def exit_on_late_signal() -> None:
    """The run's record is complete: a late signal only ends the process."""
    import threading

    if _owned and threading.current_thread() is threading.main_thread():  # a fused sweep's job runs in a thread
        _on_signal(_exit_now)


def received() -> int | None:
    """The last signal this run received, if any."""
    return _received[-1] if _received else None

"""Start-up and exit of a sweeplab process: Python's garbage collector waits both out."""

from __future__ import annotations

import atexit
import gc

_collector_paused: bool | None = None  # None: this process has not started a run yet


def pause_collector_for_start_up() -> None:
    """Pause Python's cyclic garbage collector while a process starts its first
    run (or, for ``sweeplab-eval``, its re-test).

    That start imports torch, Lightning, MLflow, scikit-learn and matplotlib
    (about a million objects), and the collector re-scans the growing heap
    about ten times meanwhile: 1.2-1.4 s (``benchmarks/startup.py``: the first
    training step 7.2 s -> 6.0 s after process start). It is switched back on,
    and run once, when training starts (``collector_back_on``), or when a sweep
    hands its jobs to other processes; a collector the user switched off stays
    off.
    """
    global _collector_paused
    if _collector_paused is None:
        _collector_paused = gc.isenabled()
        gc.disable()
        atexit.register(freeze_for_exit)  # however this process ends: a console script, a launcher's worker, a submitit job


def collector_back_on() -> None:
    """End of start-up: the collector on again (unless the user had it off), run once."""
    global _collector_paused
    if _collector_paused:
        _collector_paused = False
        gc.enable()
        gc.collect()  # what start-up left behind (about 0.4 million objects)


def freeze_for_exit() -> None:
    """Hand the heap to the operating system as the process ends.

    The interpreter's teardown runs the collector over every object the
    imports made (about a million), several times: 2.4 s at the end of each
    process (``sweeplab-eval`` 9.5 s -> 6.5 s). Frozen, they are skipped;
    atexit handlers, logging and file flushes run as before.
    """
    gc.freeze()

"""Start-up and exit of a sweeplab process: Python's garbage collector waits both out."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

_collector_paused: bool | None = None  # None: this process has not started a run yet
_frozen_at_start_up = False  # start-up's heap is frozen until the first run ends


def pause_collector_for_start_up() -> None:
    """Pause Python's cyclic garbage collector while a process starts its first
    run (or, for ``sweeplab-eval``, its re-test).

    That start imports torch, Lightning, MLflow, scikit-learn and matplotlib
    (about a million objects), and the collector re-scans the growing heap
    about ten times meanwhile: 1.2-1.4 s (``benchmarks/startup.py``: the first
    training step 7.2 s -> 6.0 s after process start). It is switched back on,
    over a frozen heap, when training starts (``collector_back_on``), or when a sweep
    hands its jobs to other processes; a collector the user switched off stays
    off.
    """
    global _collector_paused
    if _collector_paused is None:
        _collector_paused = gc.isenabled()
        gc.disable()
        atexit.register(freeze_for_exit)  # however this process ends: a console script, a launcher's worker, a submitit job


def collector_back_on() -> None:
    """End of start-up: the collector on again (unless the user had it off).

    What start-up made (about 1.2 million objects: modules, classes, configs, the
    first run's data and model) is frozen first (``gc.freeze``), not collected: a
    collection over it cost 0.6-0.8 s in every process, and each full collection
    during training would scan it again. Its cyclic leftovers (about 0.4 million
    small objects: a default run's peak memory 1.040 -> 1.055 GB) wait until the
    first run ends (``thaw_after_first_run``); whatever the run makes from here on
    is collected as usual.
    """
    global _collector_paused, _frozen_at_start_up
    if _collector_paused:
        _collector_paused = False
        gc.freeze()
        _frozen_at_start_up = True
        gc.enable()


def thaw_after_first_run() -> None:
    """The first run of this process has ended: what start-up froze is the collector's
    again, so a process that goes on to further runs (a sweep's jobs one after
    another, a fused group) frees the first run's model, trainer and data, which
    hold each other in reference cycles. A process that exits now freezes its heap
    anyway (``freeze_for_exit``); one that goes on pays one full collection later."""
    global _frozen_at_start_up
    if _frozen_at_start_up:
        _frozen_at_start_up = False
        gc.unfreeze()


def freeze_for_exit() -> None:
    """Hand the heap to the operating system as the process ends.

    The interpreter's teardown runs the collector over every object the
    imports made (about a million), several times: 2.4 s at the end of each
    process (``sweeplab-eval`` 9.5 s -> 6.5 s). Frozen, they are skipped;
    atexit handlers, logging and file flushes run as before.
    """
    gc.freeze()


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """Meanwhile the collector skips what exists now (a sweep's end: its summary's collections
    scanned what the sweep left, 0.2 s of its 0.8 s). Handed back after, unless start-up's
    freeze holds the heap: it holds these too, until its first run ends (or for good, in a
    launcher that runs none). A freeze of someone else's is left as it is."""
    if gc.get_freeze_count() and not _frozen_at_start_up:
        yield
        return
    thaw = not gc.get_freeze_count()
    gc.freeze()
    try:
        yield
    finally:
        if thaw:
            gc.unfreeze()


def end_process(status: int) -> NoReturn:
    """End a console script as the interpreter ends it (non-daemon threads joined, atexit
    handlers run: MLflow's and logging's flushes among them; the standard streams flushed),
    then leave without the teardown that follows. Even over a frozen heap, taking the modules
    of torch, Lightning and MLflow apart object by object took 0.22-0.26 s at the end of
    every process, and nothing is written in it: the files a run writes are closed by then."""
    # The interpreter's own first step: the exit hooks of thread pools (their idle workers would
    # wait for work for ever: MLflow's clients keep such pools), then every non-daemon thread joined.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)

"""Callbacks the benchmarks inject into sweeplab runs with +callbacks.<name>._target_=..."""

from __future__ import annotations

import os
import sys
import time

import lightning.pytorch as pl

EPOCH_STARTS: list[float] = []


class EpochTimer(pl.Callback):
    """Wall time at the start of every training epoch (and at the end of fit)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        EPOCH_STARTS.append(time.perf_counter())

    def on_fit_end(self, trainer, pl_module) -> None:
        EPOCH_STARTS.append(time.perf_counter())


class ExitAtFirstStep(pl.Callback):
    """Print the wall-clock time of the first training step, then leave at once."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        print(f"FIRST_STEP_AT {time.time():.6f}", flush=True)
        sys.stdout.flush()
        os._exit(0)


EPOCH_ENDS: list[float] = []


class EpochEndTimer(pl.Callback):
    """Wall time at the end of every training epoch (its validation included)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        EPOCH_ENDS.append(time.perf_counter())

"""Callbacks that hold a run at a chosen moment so a test can signal it there
(imported by the training subprocess through PYTHONPATH)."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseOnTestStart(Callback):
    """Write ``marker`` when the test stage starts, then wait, so a signal lands during the test."""

    def __init__(self, marker: str, seconds: float = 60.0) -> None:
        self.marker, self.seconds = Path(marker), seconds

    def on_test_start(self, trainer, pl_module) -> None:
        self.marker.write_text("testing")
        time.sleep(self.seconds)


class HoldAtEpoch(Callback):
    """With SWEEPLAB_TEST_HOLD set to a folder: at the start of epoch
    SWEEPLAB_TEST_HOLD_EPOCH, write ``<folder>/held-<pid>`` and wait while it
    exists (up to 120 s), so a test can signal, kill or release the run at a
    known moment instead of racing a long run. Without the variable (a resume)
    it does nothing, and being in the config either way, the run's identity
    is the same."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import os

        folder = os.environ.get("SWEEPLAB_TEST_HOLD")
        if not folder or trainer.current_epoch != int(os.environ.get("SWEEPLAB_TEST_HOLD_EPOCH", "1")):
            return
        marker = Path(folder) / f"held-{os.getpid()}"
        marker.write_text(str(trainer.current_epoch))
        deadline = time.time() + 120
        while marker.exists() and time.time() < deadline:
            time.sleep(0.05)


class WarnAtFitStart(Callback):
    """Emit one UserWarning when fitting starts (train.log must keep warnings)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        import warnings

        warnings.warn("a warning raised during the run", UserWarning, stacklevel=1)


class FailAtFitStart(Callback):
    """Raise once fitting starts (only in the run of ``seed`` if given): a run that
    fails after its MLflow run exists."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def on_fit_start(self, trainer, pl_module) -> None:
        import os

        if self.seed is None or os.environ.get("PL_GLOBAL_SEED") == str(self.seed):  # set by seed_everything
            raise RuntimeError("a planned failure at the start of fitting")


class CollectorAtTrainStart(Callback):
    """Print whether Python's garbage collector is on, how many full (generation 2)
    collections the process has run and how many objects are frozen when training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        import gc

        stats = f"full_collections={gc.get_stats()[2]['collections']} frozen={gc.get_freeze_count()}"
        print(f"COLLECTOR enabled={gc.isenabled()} {stats}", flush=True)


class KillInEpochWrite(Callback):
    """With SWEEPLAB_TEST_KILL_EPOCH set: SIGKILL this process when that epoch's training values
    are handed to the logger, after the epoch's last.ckpt is on disk and before anything is
    written. Without the variable (a resume) it does nothing; the run's identity is the same."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        import os
        import signal

        epoch = os.environ.get("SWEEPLAB_TEST_KILL_EPOCH")
        if epoch is None or stage != "fit" or not trainer.loggers:
            return
        logger = trainer.loggers[0]
        write = logger.log_metrics

        def kill_first(metrics, step=None):
            if "train/loss" in metrics and trainer.current_epoch == int(epoch):
                os.kill(os.getpid(), signal.SIGKILL)
            write(metrics, step)

        logger.log_metrics = kill_first


MODULES_SEEN: list = []  # weak references to the LightningModules that trained in this process


class RememberModule(Callback):
    """Keep a weak reference to the trained LightningModule (in-process tests: is it freed?)."""

    def on_train_start(self, trainer, pl_module) -> None:
        import weakref

        MODULES_SEEN.append(weakref.ref(pl_module))

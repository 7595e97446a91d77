"""The Lightning callback through which an Optuna trial's pruner stops a torch run
(imports Lightning: loaded only for a trial whose sweeper prunes)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from sweeplab.record.tags import PRUNED_EPOCH


class OptunaPruning(pl.Callback):
    """Report ``monitor`` to an optuna trial after each validation and stop the fit
    when the study's pruner prunes the trial. The run then ends as any run does
    (tested on its best checkpoint, FINISHED), tagged ``sweeplab.pruned``; the
    sweeper tells the study the trial was pruned (``sweeplab.pruned_epoch``)."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        stop = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                known = ", ".join(sorted(k for k in trainer.callback_metrics if k.startswith(("val/", "train/"))))
                raise ValueError(f"optimized_metric={self.monitor}: not logged each epoch, so it cannot be pruned on; logged: {known}")
            self.trial.report(float(value), step=trainer.current_epoch)
            stop = self.trial.should_prune()
        if trainer.strategy.broadcast(stop):  # every DDP process stops together
            trainer.should_stop = True
            self.pruned_epoch = trainer.current_epoch
            if trainer.is_global_zero:
                self.trial.set_user_attr(PRUNED_EPOCH, trainer.current_epoch)

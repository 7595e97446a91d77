"""The LightningModule every torch model trains in.

It owns the loss, the per-stage metric collections, the optimizer (a
``_partial_`` from conf/optimizer, bound to the parameters here) and the
scheduler (from conf/scheduler, with its own interval and monitor).
Device placement is Lightning's job: nothing here mentions a device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from sweeplab.data.base import Task
from sweeplab.metrics.scores import build_metrics
from sweeplab.models.outputs import predictions, probabilities

# Which losses fit which task; the first is the task's default.
LOSSES_BY_TASK: dict[Task, tuple[type[nn.Module], ...]] = {
    Task.BINARY: (nn.BCEWithLogitsLoss, nn.BCELoss),
    Task.MULTICLASS: (nn.CrossEntropyLoss, nn.NLLLoss),
    Task.REGRESSION: (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss),
    Task.RECONSTRUCTION: (nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss),
}


def resolve_loss(loss: nn.Module | None, task: Task) -> nn.Module:
    """The configured loss, or the task's default; refuse a loss that does not fit the task."""
    allowed = LOSSES_BY_TASK.get(task)
    if allowed is None:
        raise ValueError(f"task {task.value!r} is not trained with a loss function")
    if loss is None:
        return allowed[0]()
    if not isinstance(loss, allowed):
        fits = [t.value for t, losses in LOSSES_BY_TASK.items() if isinstance(loss, losses)]
        raise ValueError(
            f"loss={type(loss).__name__} does not fit the run's {task.value} task "
            f"(it is for {', '.join(fits) or 'other tasks'}); for {task.value} use one of: "
            f"{', '.join(c.__name__ for c in allowed)} (or loss=auto)"
        )
    return loss


def _sparse_capable() -> tuple[type[torch.optim.Optimizer], ...]:
    from sweeplab.families.torch.optim import SparseAdam

    return (SparseAdam, torch.optim.SparseAdam, torch.optim.SGD, torch.optim.Adagrad)


SPARSE_CAPABLE = _sparse_capable()


class LightningData(pl.LightningDataModule):
    """A sweeplab data module as Lightning takes it (``trainer.fit(module, datamodule=LightningData(dm))``).

    The data modules are plain classes, so a run that fits a scikit-learn model, or
    fails its data checks, never imports Lightning; this adds the base class
    Lightning looks for and hands the loaders on."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.data = data

    def setup(self, stage: str | None = None) -> None:
        self.data.setup()

    def train_dataloader(self) -> Any:
        return self.data.train_dataloader()

    def val_dataloader(self) -> Any:
        return self.data.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.data.test_dataloader()

    def predict_dataloader(self) -> Any:
        return self.data.predict_dataloader()


class SweepModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        task: Task,
        optimizer: Callable[..., torch.optim.Optimizer],
        loss: nn.Module | None = None,
        num_classes: int | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_options: dict[str, Any] | None = None,
        param_groups: Sequence[dict[str, Any]] = (),
        target_scale: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.task = Task(task)
        # A network that defines its own objective (GloVe's weighted least squares) is trained on it.
        self.own_objective = callable(getattr(net, "objective", None))
        if self.own_objective and loss is not None:
            raise ValueError(f"{type(net).__name__} trains on its own objective; drop loss={type(loss).__name__} (use loss=auto)")
        self.loss_fn = None if self.own_objective else resolve_loss(loss, self.task)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_options = dict(scheduler_options or {})
        self.param_group_specs = [dict(g) for g in param_groups]
        # Regression trains on a standardised target; metrics and predictions
        # are reported in the target's own units: value * std + mean.
        self.target_scale = tuple(float(v) for v in target_scale) if target_scale and self.task is Task.REGRESSION else None
        # Built once, cloned per stage: same metrics, different prefixes.
        metrics = build_metrics(self.task, num_classes)
        self.metrics = nn.ModuleDict({f"{s}_metrics": metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")})
        self.losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("train", "val", "test")})
        self.test_predictions: list[torch.Tensor] = []
        self.test_targets: list[torch.Tensor] = []
        self.test_probabilities: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task is Task.MULTICLASS:
            if isinstance(self.loss_fn, nn.NLLLoss):
                output = torch.log_softmax(output, dim=-1)
            return self.loss_fn(output, target)
        if self.task is Task.RECONSTRUCTION:
            return self.loss_fn(output.reshape(target.shape), target)
        output = output.reshape(-1)
        if isinstance(self.loss_fn, nn.BCELoss):
            output = torch.sigmoid(output)  # BCELoss wants probabilities
        return self.loss_fn(output, target.to(output.dtype))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = batch
        return self.score(self.net(x), x, y, stage)

    def score(self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of ``output`` (the network's, on ``x``), its predictions and targets; the stage's
        metrics updated. A fused sweep calls it with each trial's slice of one vectorised forward."""
        # An autoencoder is its own target: the labels are not used.
        target = x if self.task is Task.RECONSTRUCTION else y
        loss = self.net.objective(output, x, target) if self.own_objective else self.compute_loss(output, target)
        preds = predictions(self.task, output.detach())
        if self.target_scale is not None:
            mean, std = self.target_scale
            preds, target = preds * std + mean, target * std + mean
        self.metrics[f"{stage}_metrics"].update(preds, target)
        self.losses[f"{stage}_loss"].update(loss.detach(), weight=len(x))
        if stage == "test" and self.task.is_classification:
            self.test_probabilities.append(probabilities(self.task, output.detach()).float().cpu())
        return loss, preds, target

    def _log_epoch_metrics(self, stage: str) -> None:
        # Epoch values only, computed once per epoch (compute() syncs across
        # processes under DDP). Per-step self.log costs ~0.8 ms a call in
        # Lightning's result bookkeeping, and per-step MLflow writes ~9 ms.
        values = self.epoch_values(stage)
        if values:
            # sync_dist: under DDP the values are already global (compute() synced
            # them), so the mean over ranks is the same number; it is what keeps
            # Lightning from warning on every epoch key. A no-op on one device.
            self.log_dict(values, prog_bar=stage == "val", sync_dist=True)

    def epoch_values(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's loss and metrics over the epoch (empty if it saw no batch); reset for the next."""
        loss = self.losses[f"{stage}_loss"]
        values = {f"{stage}/loss": loss.compute(), **self.metrics[f"{stage}_metrics"].compute()} if loss.update_called else {}
        loss.reset()
        self.metrics[f"{stage}_metrics"].reset()
        return values

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: "
                "lower optimizer.lr, add a scheduler, or check the data for NaN/inf"
            )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, preds, target = self._step(batch, "test")
        self.test_predictions.append(preds.cpu())
        self.test_targets.append(target.cpu())

    def on_test_epoch_start(self) -> None:
        self.test_predictions, self.test_targets, self.test_probabilities = [], [], []

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_epoch=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # last.ckpt of an epoch is written before that epoch's values reach the logger: a process killed
        # between the two would lose them. They travel in the checkpoint; a resume writes what the run lacks.
        from sweeplab.record.checkpoints import save_epoch_points

        save_epoch_points(checkpoint, self.trainer)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # -- optimisation ---------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]] | list[nn.Parameter]:
        """All trainable parameters, split by the ``param_groups`` regex specs if any."""
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        if not self.param_group_specs:
            return [p for _, p in named]
        taken: set[str] = set()
        groups: list[dict[str, Any]] = []
        for spec in self.param_group_specs:
            spec = dict(spec)
            pattern = spec.pop("params", None)
            if not pattern:
                raise ValueError(f"param_groups entry {spec}: needs 'params', a regex on parameter names")
            members = [(n, p) for n, p in named if re.search(pattern, n) and n not in taken]
            if not members:
                raise ValueError(
                    f"param_groups params={pattern!r} matches no trainable parameter; names are like: " + ", ".join(n for n, _ in named[:6])
                )
            taken.update(n for n, _ in members)
            groups.append({"params": [p for _, p in members], **spec})
        rest = [p for n, p in named if n not in taken]
        return ([{"params": rest}] if rest else []) + groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameter_groups())
        has_sparse = any(getattr(m, "sparse", False) for m in self.net.modules())
        if has_sparse and not isinstance(optimizer, SPARSE_CAPABLE):
            raise ValueError(
                f"this model's embedding gets sparse gradients, which {type(optimizer).__name__} cannot take: "
                "use optimizer=sparse_adam (or sgd, adagrad)"
            )
        if self.scheduler_factory is None:
            return optimizer
        options = dict(self.scheduler_options)
        interval = options.get("interval", "epoch")
        if interval not in ("epoch", "step"):
            raise ValueError(f"scheduler.interval={interval!r}: choose epoch or step")
        config: dict[str, Any] = {
            "scheduler": self.scheduler_factory(optimizer),
            "interval": interval,
            "frequency": int(options.get("frequency", 1)),
        }
        if isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = options.get("monitor") or "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

"""Trials of one architecture trained as one vectorised computation (``hydra/launcher=fused``).

Each trial is a prepared ``TorchFamily``: its own network (initialised from its own
seed), optimizer and scheduler from its config, data split and shuffling order, loss
and metrics. One step runs every trial's forward as one ``torch.func.vmap`` over their
stacked parameters, one backward for all, and one optimizer update a layer for the
trials whose optimizers can step together (``stacked``). The epoch ends as a solo
Lightning run ends it: validation, the same keys logged at the same steps,
``best.ckpt`` and ``last.ckpt`` in the trial's own folder (Lightning checkpoints: a
solo Trainer tests and resumes from them), early stopping and an Optuna pruner per
trial. A trial whose loss turns NaN, that stops early or is pruned leaves the group;
the others go on.

Random streams: a trial's shuffling draws from its own copy of the global generator,
in the order a solo run draws, so without dropout a trial sees the batches its solo
run sees and its losses match it to float rounding. Dropout masks are drawn per trial
by ``vmap(randomness="different")`` from the shared generator, so with dropout a
trial's numbers differ from its solo run's the way another seed's would.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sweeplab.data.base import Task

FUSABLE_TASKS = (Task.BINARY, Task.MULTICLASS, Task.REGRESSION)
# The callbacks a group does the work of; any other makes a trial train alone.
DONE_HERE = {"ModelCheckpoint", "OnExceptionCheckpoint", "EarlyStopping", "PreciseBatchNorm", "RichProgressBar", "TQDMProgressBar"}
TRAINER_DEFAULTS = {  # what a trial's Trainer must keep for the group's loop to be its loop
    "fast_dev_run": False,
    "overfit_batches": 0.0,
    "limit_train_batches": 1.0,
    "limit_val_batches": 1.0,
    "accumulate_grad_batches": 1,
    "check_val_every_n_epoch": 1,
    "val_check_interval": 1.0,
    "max_steps": -1,
    "detect_anomaly": False,
    "profiler": None,
    "devices": 1,
}


def why_alone(family: Any) -> str | None:
    """Why this trial cannot train in a group (None: it can)."""
    cfg, module = family.cfg, family.module
    for key, default in TRAINER_DEFAULTS.items():
        value = cfg.trainer.get(key, default)
        if value != default and not (key == "devices" and value in ("1", [0], "auto")):
            return f"trainer.{key}={value}"
    why = _precision_why_alone(family)
    if why:
        return why
    if cfg.trainer.get("gradient_clip_algorithm") not in (None, "norm"):
        return f"trainer.gradient_clip_algorithm={cfg.trainer.gradient_clip_algorithm}"
    if module.task not in FUSABLE_TASKS:
        return f"a {module.task.value} task"
    if module.own_objective:
        return f"{type(module.net).__name__} trains on its own objective"
    for layer in module.net.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            return f"{type(layer).__name__} (its running statistics do not vectorise)"
        if getattr(layer, "sparse", False):
            return "a sparse embedding"
    others = sorted({type(c).__name__ for c in family.trainer.callbacks} - DONE_HERE - {"OptunaPruning", "ModelSummary"})
    if others:
        return f"callback {', '.join(others)}"
    if len(family.trainer.optimizers or []) > 1:
        return "several optimizers"
    return None


def _precision_why_alone(family: Any) -> str | None:
    """A group runs its forward and loss in its trials' precision plugin's ``forward_context`` (as a solo
    step does), on fp32 weights: 32-bit, and mixed precision without a loss scaler (bf16-mixed)."""
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision

    plugin, precision = family.trainer.precision_plugin, family.cfg.trainer.get("precision", "32-true")
    if type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None):
        return None
    if type(plugin) is MixedPrecision:
        return f"trainer.precision={precision} (its loss scaler skips a whole run's step; groups train in 32-true or bf16-mixed)"
    return f"trainer.precision={precision} (groups train in 32-true or bf16-mixed)"


# The host memory one more run of a group holds besides its data (its Trainer, loggers, MLflow
# client, thread): 11 MiB measured on the digits MLP (peak RSS of 32 trials less that of 8), rounded up.
RUN_ON_HOST = 16 * 2**20


def memory_per_trial(family: Any) -> tuple[int, int]:
    """``(bytes on the training device, bytes on the host)`` one more trial of a group takes, an
    estimate from the prepared trial: on the device, its stacked parameters with their gradients,
    two optimizer states and its own copy (6x its parameters), three times the layer outputs of one
    training batch (forward and backward), and its training data where the group gathers batches
    from tensors moved there; on the host, its data in memory and ``RUN_ON_HOST``."""
    from sweeplab.data.base import _BatchIndexed

    module, data = family.module, family.datamodule
    parameters = sum(p.numel() * p.element_size() for p in module.net.parameters())
    loaders = [data.train_dataloader(), data.val_dataloader(), data.test_dataloader()]
    in_memory = [loader.dataset for loader in loaders if isinstance(loader.dataset, _BatchIndexed)]
    on_host = sum(d.x.nbytes + d.y.nbytes for d in in_memory) + RUN_ON_HOST
    train = loaders[0].dataset
    gathered = train.x.nbytes + train.y.nbytes if isinstance(train, _BatchIndexed) else 0
    return 6 * parameters + 3 * _activations(module.net, train, data.batch_size) + gathered, on_host


def _activations(net: nn.Module, dataset: Any, batch_size: int) -> int:
    """Bytes of every layer's output for one batch of ``dataset``'s first sample repeated (0 where
    a sample cannot be read so): one forward in eval mode, no gradient, the random state kept."""
    try:
        x = dataset[0][0]
    except Exception:  # noqa: BLE001 - a dataset that cannot be indexed: the estimate leaves its activations out
        return 0
    if not torch.is_tensor(x):
        return 0
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        for tensor in output if isinstance(output, tuple | list) else (output,):
            if torch.is_tensor(tensor):
                total += tensor.numel() * tensor.element_size()

    device = next(net.parameters()).device
    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    training = net.training
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            net.eval()
            net(x.unsqueeze(0).expand(batch_size, *x.shape).to(device))
    except Exception:  # noqa: BLE001 - a model that needs more than a tensor batch: estimated without it
        return 0
    finally:
        net.train(training)
        for hook in hooks:
            hook.remove()
    return total


def free_memory(device: torch.device) -> tuple[int, int]:
    """``(bytes free on device, bytes available on the host)``; on the CPU the two are the same."""
    import psutil

    host = int(psutil.virtual_memory().available)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), host
    return host, host


def shape_of(family: Any) -> tuple[Any, ...]:
    """What must be equal across a group: parameter names and shapes, buffers, batches, device."""
    net, data = family.module.net, family.datamodule
    return (
        tuple((n, tuple(p.shape), p.dtype) for n, p in net.named_parameters()),
        tuple((n, tuple(b.shape)) for n, b in net.named_buffers()),
        data.batch_size,
        len(data.train_dataloader().dataset),
        len(data.val_dataloader().dataset),
        str(family.trainer.strategy.root_device),
    )


class _Trial:
    """One member's state in the group's loop."""

    def __init__(self, family: Any, device: torch.device, position: int) -> None:
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, OnExceptionCheckpoint

        from sweeplab.record.checkpoints import atomic_checkpoint_io

        self.family, self.module, self.cfg = family, family.module, family.cfg
        self.position = position  # its row in the group's tallies
        self.module.to(device)
        self.rng = family.rng_at_fit  # the global generator as its solo fit would find it
        self.params = {n: p for n, p in self.module.net.named_parameters() if p.requires_grad}
        self.frozen = {n: p for n, p in self.module.net.named_parameters() if not p.requires_grad}
        self.buffers = dict(self.module.net.named_buffers())
        configured = self.module.configure_optimizers()
        self.optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        schedule = configured.get("lr_scheduler") if isinstance(configured, dict) else None
        self.scheduler = schedule["scheduler"] if schedule else None
        self.interval, self.frequency = (schedule["interval"], schedule["frequency"]) if schedule else ("epoch", 1)
        self.plateau_monitor = schedule.get("monitor") if schedule else None
        callbacks = family.trainer.callbacks
        checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint) and not isinstance(c, OnExceptionCheckpoint)]
        self.best = next((c for c in checkpoints if c.monitor), None)
        self.last = next((c for c in checkpoints if not c.monitor), None)
        self.best_score: float | None = None
        self.best_path: Path | None = None
        self.stopper = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
        self.wait, self.stop_best = 0, None
        self.clip = family.cfg.trainer.get("gradient_clip_val")
        self.loggers = list(family.trainer.loggers)
        self.checkpoint_io = atomic_checkpoint_io()
        self.outcome: Any = None  # set once it leaves: its result, or the exception that ended it
        self.tested = False  # tested by the group (``_test_together``), its test values in its result
        self.epochs = 0
        self.per_epoch = len(family.datamodule.train_dataloader())
        self.val_batches = len(family.datamodule.val_dataloader())
        self.last_values: dict[str, float] = {}

    @contextlib.contextmanager
    def own_random_stream(self) -> Iterator[None]:
        """Draw from this trial's copy of the global generator (its shuffling), as its solo run would."""
        shared = torch.get_rng_state()
        torch.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()
            torch.set_rng_state(shared)

    def batches(self, loader: Any) -> Iterator[Any]:
        """A loader's batches, its random draws (at iter() and the first batch) from this trial's stream."""
        with self.own_random_stream():
            iterator = iter(loader)
            first = next(iterator, None)
        if first is not None:
            yield first
            yield from iterator

    def batch_order(self, loader: Any) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]] | None:
        """``data.base.batch_order`` of the loader, drawn from this trial's stream."""
        from sweeplab.data.base import batch_order

        with self.own_random_stream():
            return batch_order(loader)


def _stage_batches(active: list[_Trial], loaders: list[Any], device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each step's ``(x, y)`` for the trials ``active``, stacked [trials, rows, ...], each trial's
    batch in its own order. Loaders of in-memory tensors (sweeplab's own) are read as one gather a
    step for all trials; any other is iterated, trial by trial."""
    orders = [trial.batch_order(loader) for trial, loader in zip(active, loaders)]
    if any(order is None for order in orders):
        for batch in zip(*(t.batches(loader) for t, loader in zip(active, loaders, strict=True))):
            yield torch.stack([b[0] for b in batch]).to(device), torch.stack([b[1] for b in batch]).to(device)
        return
    xs = torch.stack([order[0] for order in orders]).to(device)
    ys = torch.stack([order[1] for order in orders]).to(device)
    positions = torch.tensor([[i for b in order[2] for i in b] for order in orders], device=device)
    trials = torch.arange(len(active), device=device)[:, None]
    start = 0
    for batch in orders[0][2]:  # equal lengths and batch sizes: the batches end at the same positions
        rows = positions[:, start : start + len(batch)]
        start += len(batch)
        yield xs[trials, rows], ys[trials, rows]


def _progress(current: int, total: int, keys: str = "ready completed started processed") -> dict[str, Any]:
    return {"total": dict.fromkeys(keys.split(), total), "current": dict.fromkeys(keys.split(), current)}


def _loops(epoch: int, step: int, per_epoch: int, val_batches: int) -> dict[str, Any]:
    """Lightning's loop counters as its own checkpoint at the end of epoch ``epoch`` holds them
    (processed, not yet completed): a solo fit resumed from it starts the next epoch."""
    epochs = _progress(epoch + 1, epoch + 1)
    for part in ("total", "current"):
        epochs[part]["completed"] = epoch
    idle = {"state_dict": {}, "batch_progress": {**_progress(0, 0), "is_last_batch": False}}
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": step},
            "epoch_loop.batch_progress": {**_progress(per_epoch, step), "is_last_batch": True},
            "epoch_loop.scheduler_progress": _progress(0, 0, "ready completed"),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {
                "optimizer": {
                    "step": _progress(per_epoch, step, "ready completed"),
                    "zero_grad": _progress(per_epoch, step, "ready completed started"),
                }
            },
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": _progress(0, 0, "ready completed"),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": {**_progress(val_batches, val_batches), "is_last_batch": True},
            "epoch_progress": epochs,
        },
        "validate_loop": idle,
        "test_loop": idle,
        "predict_loop": {"state_dict": {}, "batch_progress": _progress(0, 0)},
    }


def _checkpoint(trial: _Trial, epoch: int, step: int, values: dict[str, float]) -> dict[str, Any]:
    """A Lightning checkpoint of one trial at the end of epoch ``epoch``, as its solo Trainer writes
    it: a solo Trainer tests it, and ``resume=auto`` continues from it (alone)."""
    import lightning

    from sweeplab.families.torch.stacked import own_state_dict
    from sweeplab.record.checkpoints import EPOCH_POINTS

    callbacks = [c for c in (trial.best, trial.last, trial.stopper) if c is not None]
    return {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": lightning.__version__,
        "state_dict": own_state_dict(trial.module),
        "loops": _loops(epoch, step, trial.per_epoch, trial.val_batches),
        "callbacks": {c.state_key: c.state_dict() for c in callbacks},
        "optimizer_states": [trial.optimizer.state_dict()],
        "lr_schedulers": [trial.scheduler.state_dict()] if trial.scheduler is not None else [],
        EPOCH_POINTS: {"step": step - 1, "values": {**values, "epoch": float(epoch)}},
    }


def _save(trial: _Trial, callback: Any, checkpoint: dict[str, Any]) -> Path:
    path = Path(callback.dirpath) / f"{callback.filename}.ckpt"
    trial.checkpoint_io.save_checkpoint(checkpoint, path)  # marks the folder as the trial's run's, as a solo save does
    return path


def _improved(value: float, best: float | None, mode: str, delta: float = 0.0) -> bool:
    if best is None:
        return not math.isnan(value)
    return value < best - delta if mode == "min" else value > best + delta


class _Tally:
    """A stage's counts for a group of classifiers: a confusion matrix and a loss sum a trial,
    added with one ``bincount`` a batch for the whole group (a torchmetrics update a trial a
    step cost more than the step's backward). Its epoch values are those the trial's own
    metrics give (``scores_from_confusion``, the loss weighted by rows), under the same keys."""

    def __init__(self, trials: int, classes: int, binary: bool, device: torch.device) -> None:
        self.classes, self.binary = classes, binary
        self.confusion = torch.zeros(trials, classes, classes, dtype=torch.long, device=device)
        self.samples = torch.zeros(trials, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros(trials, dtype=torch.float64, device=device)
        self.batches = [0] * trials

    def add(self, members: list[int], predicted: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor) -> None:
        """One batch of trials ``members`` (positions in the group): predictions and targets [k, rows], losses [k]."""
        c, rows = self.classes, targets.shape[1]
        where = torch.tensor(members, device=targets.device)
        targets = targets.long()
        inside = (targets >= 0) & (targets < c)  # a label out of range is counted at the epoch's end, as a solo run does
        cells = (where[:, None] * c + targets.clamp(0, c - 1)) * c + predicted.long()
        self.confusion += torch.bincount(cells[inside], minlength=self.confusion.numel()).view_as(self.confusion)
        self.samples.index_add_(0, where, torch.full_like(where, rows))
        self.loss_sum.index_add_(0, where, losses.detach().double() * rows)
        for member in members:
            self.batches[member] += 1

    def values(self, member: int, stage: str) -> dict[str, torch.Tensor]:
        """The trial's epoch values (empty if the stage saw no batch of it); its counts start again."""
        from sweeplab.metrics.confusion import scores_from_confusion

        if not self.batches[member]:
            return {}
        confusion, samples = self.confusion[member].clone(), int(self.samples[member])
        missing = samples - int(confusion.sum())
        loss = (self.loss_sum[member] / samples).to(torch.get_default_dtype())
        self.confusion[member], self.samples[member], self.loss_sum[member], self.batches[member] = 0, 0, 0, 0
        if missing:
            raise ValueError(f"{missing} target labels are outside the {self.classes} classes 0..{self.classes - 1}")
        return {f"{stage}/loss": loss, **{f"{stage}/{k}": v for k, v in scores_from_confusion(confusion, self.binary).items()}}


def _tallies(trials: list[Any], device: torch.device) -> dict[str, _Tally] | None:
    """A train and a val tally when every trial is a classifier scored on its loss and one
    confusion matrix (sweeplab's own metric); else None: each trial updates its own metrics."""
    from sweeplab.metrics.confusion import BinaryScores, MulticlassScores

    kinds = set()
    for trial in trials:
        module = trial.module
        scores = dict(module.metrics["train_metrics"].items(keep_base=True)).get("scores")
        if module.own_objective or module.target_scale is not None or not isinstance(scores, (BinaryScores, MulticlassScores)):
            return None
        kinds.add((module.task, 2 if isinstance(scores, BinaryScores) else scores.num_classes))
    if len(kinds) != 1:
        return None
    task, classes = kinds.pop()
    return {stage: _Tally(len(trials), classes, task is Task.BINARY, device) for stage in ("train", "val")}


def _group_loss(loss_fns: list[Any]) -> Any:
    """One loss call for a group whose trials' loss functions are the same (cross-entropy or
    BCE-with-logits, mean over the batch, no class weights): ``(out [k, rows, ...], y [k, rows])
    -> [k]``, each trial's mean as its own loss function gives it. None otherwise."""
    import torch.nn.functional as F

    first = loss_fns[0]
    if type(first) is nn.CrossEntropyLoss:
        same = all(
            type(f) is nn.CrossEntropyLoss
            and f.weight is None
            and f.reduction == "mean"
            and f.ignore_index == -100  # the default, which no label is: the mean is over every row
            and f.label_smoothing == first.label_smoothing
            for f in loss_fns
        )

        def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            flat = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=first.label_smoothing)
            return flat.view(out.shape[0], -1).mean(1)

        return cross_entropy if same else None
    if type(first) is nn.BCEWithLogitsLoss:
        same = all(
            type(f) is nn.BCEWithLogitsLoss and f.weight is None and f.pos_weight is None and f.reduction == "mean" for f in loss_fns
        )

        def binary_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            logits = out.reshape(out.shape[0], -1)
            return F.binary_cross_entropy_with_logits(logits, y.reshape(out.shape[0], -1).to(logits.dtype), reduction="none").mean(1)

        return binary_cross_entropy if same else None
    return None


def _progress_bar(families: list[Any]) -> Any:
    """A bar over each epoch's batches (training, then validation) of the group, where a solo run of its
    trials would show one (a progress bar callback) and the output is a terminal; None otherwise: the
    epoch lines alone, as in a log file, and in the worker processes of ``n_jobs`` (several bars on one
    terminal would draw over each other)."""
    from rich.console import Console

    from sweeplab.sweeps.fused import WORKERS_ENV

    if families[0].trainer.progress_bar_callback is None or os.environ.get(WORKERS_ENV):
        return None
    console = Console()
    if not console.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


def train_together(families: list[Any], label: str, say: Any = print) -> list[Any]:
    """Train the prepared trials ``families`` as one group, then test them together; return, per
    trial, its outcome: ``(metrics, best checkpoint or None, epochs, steps, tested)`` (``tested``: its
    test values are in ``metrics`` and logged, its predictions in its module), or the exception that ended it.
    An interrupt (Ctrl-C, SIGTERM) ends every trial still training with it, each with its last.ckpt."""
    from torch.func import functional_call, vmap

    from sweeplab.families.torch.stacked import Stack
    from sweeplab.models.outputs import predictions
    from sweeplab.record.publish import writes_together
    from sweeplab.sweeps.fused import GROUP_TAG

    device = families[0].trainer.strategy.root_device
    trials = [_Trial(f, device, n) for n, f in enumerate(families)]
    tally = _tallies(trials, device)
    for trial in trials:  # the one thing that tells a fused trial's run from its solo run
        main = trial.loggers[0] if trial.loggers else None
        if getattr(main, "run_id", None) and hasattr(main.experiment, "set_tag"):
            main.experiment.set_tag(main.run_id, GROUP_TAG, label)
    template = trials[0].module.net
    max_epochs = int(families[0].cfg.trainer.get("max_epochs") or 1)

    def forward(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(template, (params, buffers), (x,))

    fused_forward = vmap(forward, randomness="different")
    # bf16-mixed: the forward and loss under autocast, as a solo training_step runs them; the backward
    # and the stacked update outside it, on the fp32 weights. (Under vmap, torch adds a Linear's bias
    # after the bf16 matmul in fp32, where a solo run adds it in bf16: a rounding apart.)
    autocast = families[0].trainer.precision_plugin.forward_context

    group_loss = _group_loss([t.module.loss_fn for t in trials]) if tally is not None else None

    def trial_losses(active: list[_Trial], members: list[int], out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The losses [k] of the trials at ``members`` of ``active`` in this batch: one call for the group where
        their loss functions are the same function, else each trial's own."""
        if group_loss is not None:
            rows = torch.tensor(members, device=out.device)
            return group_loss(out[rows], y[rows])
        return torch.stack([active[i].module.compute_loss(out[i], y[i]) for i in members])

    def epoch_values(trial: _Trial, stage: str) -> dict[str, torch.Tensor]:
        return trial.module.epoch_values(stage) if tally is None else tally[stage].values(trial.position, stage)

    def run_batches(stack: Stack, stage: str, step: int, epoch: int) -> int:
        """One stage's batches for the stack's trials, row by row (a trial whose loss turned NaN is carried, not scored)."""
        active = stack.trials
        loaders = [t.family.datamodule.train_dataloader() if stage == "train" else t.family.datamodule.val_dataloader() for t in active]
        for x, y in _stage_batches(active, loaders, device):
            if bar is not None:
                bar.advance(bar_task)
            params = {**stack.params, **stack.frozen}
            live = [i for i, trial in enumerate(active) if trial.outcome is None]  # not those whose loss turned NaN
            if not live:  # every trial's loss turned NaN this epoch: nothing left to step
                break
            if stage == "train":
                with autocast():
                    out = fused_forward(params, stack.buffers, x)
                    if tally is None:
                        losses = torch.stack([active[i].module.score(out[i], x[i], y[i], "train")[0] for i in live])
                    else:
                        losses = trial_losses(active, live, out, y)
                finite = torch.isfinite(losses)
                if not bool(finite.all()):  # those trials fail alone; the others step
                    for j in (~finite).nonzero().flatten().tolist():
                        active[live[j]].outcome = FloatingPointError(
                            f"loss became {losses[j].item()} at epoch {epoch}, step {step}: "
                            "lower optimizer.lr, add a scheduler, or check the data for NaN/inf"
                        )
                    keep = finite.nonzero().flatten()
                    losses, live = losses[keep], [live[j] for j in keep.tolist()]
                if tally is not None and live:
                    rows = torch.tensor(live, device=out.device)
                    tally["train"].add(
                        [active[i].position for i in live],
                        predictions(active[0].module.task.value, out.detach()[rows]).reshape(len(live), -1),
                        y[rows].reshape(len(live), -1),
                        losses,
                    )
                stack.zero_grad()
                if live:
                    losses.sum().backward()
                    stack.step()  # a row whose loss turned NaN steps on a zero gradient: it is not kept
                for i in live:
                    trial = active[i]
                    if trial.scheduler is not None and trial.interval == "step" and (step + 1) % trial.frequency == 0:
                        trial.scheduler.step()
                step += 1
            else:
                with torch.no_grad(), autocast():
                    out = fused_forward(params, stack.buffers, x)
                    if tally is None:
                        for i in live:
                            active[i].module.score(out[i], x[i], y[i], "val")
                    else:
                        rows = torch.tensor(live, device=out.device)
                        tally["val"].add(
                            [active[i].position for i in live],
                            predictions(active[0].module.task.value, out[rows]).reshape(len(live), -1),
                            y[rows].reshape(len(live), -1),
                            trial_losses(active, live, out, y),
                        )
        return step

    step, started = 0, time.perf_counter()
    stack = Stack(trials)
    bar = _progress_bar(families)
    bar_task = bar.add_task("", total=None) if bar is not None else None
    try:
        if bar is not None:
            bar.start()
        for epoch in range(max_epochs):
            if bar is not None:
                batches = trials[0].per_epoch + trials[0].val_batches
                active_now = sum(t.outcome is None for t in stack.trials)
                bar.reset(
                    bar_task, total=batches, description=f"{label.rsplit('/', 1)[-1]}: epoch {epoch + 1}/{max_epochs}, {active_now} trials"
                )
                bar.refresh()  # drawn at once, not at the next tick: an epoch can be shorter than one
            template.train()
            step = run_batches(stack, "train", step, epoch)
            template.eval()
            with torch.no_grad():
                run_batches(stack, "val", step, epoch)
            with writes_together():  # the group's metric points in one store transaction
                for trial in stack.trials:
                    stack.hand_back(trial)  # its optimizer's state, for its checkpoints
                    _end_epoch(trial, epoch, step, epoch_values(trial, "val"), epoch_values(trial, "train"))
            active = [t for t in stack.trials if t.outcome is None]
            say(f"epoch {epoch + 1}/{max_epochs}, {len(active)} of {len(trials)} trials training ({time.perf_counter() - started:.1f} s)")
            if not active:
                break
            if len(active) < len(stack.trials):  # those that left no longer cost a row
                stack.release()
                stack = Stack(active)
    except BaseException as exc:  # noqa: BLE001 - an interrupt (or a fault) ends every trial still training, each with its last.ckpt
        for trial in stack.trials:
            if trial.outcome is None:
                trial.outcome = exc
    finally:
        if bar is not None:
            bar.stop()
        stack.release()
    for trial in trials:
        if trial.outcome is None:
            trial.outcome = (trial.last_values, trial.best_path, trial.epochs, step)
    finished = [t for t in trials if isinstance(t.outcome, tuple)]
    try:
        _test_together(finished, template, fused_forward, autocast, device)
    except Exception as exc:  # noqa: BLE001 - each trial is then tested as its solo run is, by Lightning
        say(f"the group's test stopped ({type(exc).__name__}: {exc}); each trial is tested on its own")
        for trial in finished:
            trial.tested = False
            trial.module.losses["test_loss"].reset()  # what the group's test counted so far is not the Lightning test's
            trial.module.metrics["test_metrics"].reset()
    except BaseException as exc:  # noqa: BLE001 - an interrupt during the test ends each trial with its last.ckpt
        for trial in finished:
            trial.outcome = exc
    return [t.outcome if isinstance(t.outcome, BaseException) else (*t.outcome, t.tested) for t in trials]


def _test_together(trials: list[_Trial], template: nn.Module, fused_forward: Any, autocast: Any, device: torch.device) -> None:
    """Test each trial on its best checkpoint (else the weights it ends with) as its solo run's
    ``trainer.test`` does, in one vectorised pass over the trials' test sets: the weights loaded into
    its module (its logged model is of them), each batch scored by its own metrics (``score``, as
    ``test_step``), its predictions kept for its reports, its test values logged at the step and
    epoch Lightning logs them at; all trials' points in one store transaction. Trials whose test
    sets differ in size are left to Lightning (``tested`` False)."""
    from sweeplab.record.publish import writes_together

    loaders = [t.family.datamodule.test_dataloader() for t in trials]
    if not trials or len({len(loader.dataset) for loader in loaders}) != 1:
        return
    for trial in trials:
        best = trial.outcome[1]
        if best is not None:
            trial.module.load_state_dict(torch.load(best, map_location=device, weights_only=True)["state_dict"])
        trial.module.on_test_epoch_start()
    names = [n for n, _ in template.named_parameters()]
    params = {n: torch.stack([t.module.net.get_parameter(n).detach() for t in trials]) for n in names}
    buffers = {n: torch.stack([t.module.net.get_buffer(n) for t in trials]) for n, _ in template.named_buffers()}
    template.eval()
    with torch.no_grad(), autocast():
        for x, y in _stage_batches(trials, loaders, device):
            out = fused_forward(params, buffers, x)
            for i, trial in enumerate(trials):
                _, preds, target = trial.module.score(out[i], x[i], y[i], "test")
                trial.module.test_predictions.append(preds.cpu())
                trial.module.test_targets.append(target.cpu())
    with writes_together():
        for trial in trials:
            values = {k: float(v) for k, v in trial.module.epoch_values("test").items()}
            trial.outcome = ({**trial.outcome[0], **values}, *trial.outcome[1:])
            for logger in trial.loggers:
                logger.log_metrics({**values, "epoch": float(trial.outcome[2])}, step=trial.outcome[3])
            trial.tested = True


def _end_epoch(trial: _Trial, epoch: int, step: int, val_values: dict[str, Any], train_values: dict[str, Any]) -> None:
    """A trial's epoch end, in a solo Lightning run's order: validation logged and checkpointed,
    the pruner asked, then the train values; schedulers step; early stopping decides."""
    val = {k: float(v) for k, v in val_values.items()}
    train = {k: float(v) for k, v in train_values.items()}
    if isinstance(trial.outcome, BaseException):  # its loss turned NaN this epoch: nothing of the epoch is kept
        return
    lr = float(trial.optimizer.param_groups[0]["lr"])
    values = {**train, **val, "lr": lr}
    trial.epochs, trial.last_values = epoch + 1, values
    for logger in trial.loggers:
        logger.log_metrics({**val, "epoch": float(epoch)}, step=step - 1)
        logger.log_metrics({**train, "lr": lr, "epoch": float(epoch)}, step=step - 1)
    improved = False
    if trial.best is not None:  # its state as its solo ModelCheckpoint would hold it, saved in the checkpoint
        monitored = values.get(trial.best.monitor)
        improved = monitored is not None and _improved(monitored, trial.best_score, trial.best.mode)
        if improved:
            path = Path(trial.best.dirpath) / f"{trial.best.filename}.ckpt"
            trial.best_score, trial.best_path = monitored, path
            score = torch.tensor(monitored)
            trial.best.best_model_score, trial.best.best_model_path, trial.best.kth_value = score, str(path), score
            trial.best.best_k_models, trial.best.kth_best_model_path = {str(path): score}, str(path)
        trial.best.current_score = torch.tensor(monitored) if monitored is not None else None
    if trial.last is not None:
        trial.last.best_model_path = trial.last.last_model_path = str(Path(trial.last.dirpath) / f"{trial.last.filename}.ckpt")
    if trial.stopper is not None and trial.stopper.monitor in values:
        value = values[trial.stopper.monitor]
        if _improved(value, trial.stop_best, trial.stopper.mode, abs(trial.stopper.min_delta)):
            trial.stop_best, trial.wait = value, 0
        else:
            trial.wait += 1
        trial.stopper.wait_count, trial.stopper.best_score = (
            trial.wait,
            torch.tensor(math.inf if trial.stop_best is None else trial.stop_best),
        )
    checkpoint = _checkpoint(trial, epoch, step, values)
    best = _save(trial, trial.best, checkpoint) if improved else None
    if trial.last is not None:
        if best is not None:  # the same checkpoint: its file copied (a save a trial an epoch is the group's largest cost after its steps)
            trial.checkpoint_io.copy_checkpoint(best, Path(trial.last.dirpath) / f"{trial.last.filename}.ckpt")
        else:
            _save(trial, trial.last, checkpoint)
    pruning = getattr(trial.family, "pruning", None)
    if pruning is not None:
        trial_of_study = pruning.trial
        trial_of_study.report(float(values[pruning.monitor]), step=epoch)
        if trial_of_study.should_prune():
            from sweeplab.record.tags import PRUNED_EPOCH

            pruning.pruned_epoch = epoch
            trial_of_study.set_user_attr(PRUNED_EPOCH, epoch)
            trial.outcome = (values, trial.best_path, trial.epochs, step)
    if trial.scheduler is not None and trial.interval == "epoch" and (epoch + 1) % trial.frequency == 0:
        if isinstance(trial.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            trial.scheduler.step(values[trial.plateau_monitor or "val/loss"])
        else:
            trial.scheduler.step()
    if trial.stopper is not None and trial.outcome is None and trial.wait >= trial.stopper.patience:
        trial.outcome = (values, trial.best_path, trial.epochs, step)

"""The torch family: a network on a data module, trained by Lightning, tested on its
best checkpoint, its reports written. ``sweeplab-eval`` rebuilds a run's module and
Trainer with the same builders."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sweeplab.config import check_accelerator, model_choice
from sweeplab.families.base import quiet_lightning, seed_everything
from sweeplab.sweeps import fused, optuna


class TorchFamily:
    """A torch network on a data module, trained and tested by Lightning."""

    kind = "torch"
    resumable = True  # from its Lightning checkpoint
    lightning = True
    run_tags: dict[str, str] = {}  # replaced, never changed in place, once fitted (sweeplab.pruned)

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def prepare(self) -> None:
        from sweeplab.data.text import check_text_pairing

        check_accelerator(self.cfg)
        seed_everything(self.cfg.seed)
        self.datamodule = hydra.utils.instantiate(self.cfg.data)
        self.datamodule.setup()
        check_text_pairing(self.datamodule, self.cfg.model, model_choice(self.cfg))
        quiet_lightning()  # the data and the model's pairing with it passed their checks: now Lightning's ~5 s of imports
        self.module = build_module(self.cfg, self.datamodule)
        self.task = self.module.task

    def attach(self, loggers: list[Any], run_dir: Path) -> None:
        # An optuna trial with a pruner reports the metric it is scored on after each validation.
        keys = optuna.objective_keys(self.cfg)
        self.pruning = optuna.pruning_callback(keys[0]) if keys else None
        self.trainer, self.run_dir = build_trainer(self.cfg, loggers, run_dir, [self.pruning] if self.pruning else []), run_dir
        facts = getattr(self.module.net, "facts", None)  # e.g. the share of the vocabulary pre-trained vectors cover
        for logger in loggers if facts else []:
            logger.log_metrics(facts, step=0)

    def served_model(self) -> tuple[Any, str]:
        # On the CPU (training is over): the logged model then loads on any machine, GPU or not.
        return self.module.net.cpu(), "pytorch"

    def fit(self, start_from: Path | None) -> tuple[dict[str, float], list[Path]] | None:
        fitted = self._fit_in_group() if fused.member() is not None and start_from is None else None
        if fitted is None:
            fitted = fit_torch(self.module, self.trainer, self.datamodule, self.run_dir, start_from)
        if self.pruning is not None and self.pruning.pruned_epoch is not None:  # stopped early; tested as any run
            self.run_tags = {"sweeplab.pruned": "true", "sweeplab.pruned_epoch": str(self.pruning.pruned_epoch)}
        profiles = sorted(self.run_dir.glob("*-profile.txt"))  # debug=profiler: its reports join the artifacts
        for profile in profiles:
            print(f"sweeplab-train: profiler report {profile}")
        return None if fitted is None else (fitted[0], [*fitted[1], *profiles])

    def _fit_in_group(self) -> tuple[dict[str, float], list[Path]] | None:
        """A job of a fused sweep: its group trains it with the others; then it is tested on its
        best checkpoint as a solo run is. None: the group let it train alone."""
        import torch

        self.rng_at_fit = torch.get_rng_state()  # its shuffling continues from here, as a solo fit's would
        outcome = fused.train_with_others(self)
        if outcome is None:
            torch.set_rng_state(self.rng_at_fit)
            return None
        metrics, best, epochs, steps, tested = outcome
        if tested:  # by the group, on its best checkpoint: its reports from the predictions it made
            return write_reports(self.module, self.trainer, self.datamodule, self.run_dir, dict(metrics))
        # Its test is logged at the step and epoch a solo fit ends on.
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = steps
        self.trainer.fit_loop.epoch_progress.current.completed = epochs
        return test_and_report(self.module, self.trainer, self.datamodule, self.run_dir, str(best or ""), dict(metrics))


def build_module(cfg: DictConfig, datamodule: Any) -> Any:
    """A torch network with its loss, optimizer and scheduler, in the LightningModule."""
    from sweeplab.families.torch.module import SweepModule

    # Text data modules hand their vocabulary to the models that read it (model_inputs).
    inputs = datamodule.model_inputs() if hasattr(datamodule, "model_inputs") else {}
    build = hydra.utils.instantiate(
        cfg.model, input_shape=datamodule.input_shape, num_outputs=datamodule.num_outputs, _convert_="all", _partial_=True
    )
    net = build(**inputs)  # objects, not config: instantiate would turn them into dicts
    # The data's task, unless the network defines its own (an autoencoder reconstructs).
    task = getattr(net, "task", datamodule.task)
    loss = hydra.utils.instantiate(cfg.loss) if cfg.get("loss") else None
    scheduler, scheduler_options = None, {}
    if cfg.get("scheduler"):
        scheduler_cfg = OmegaConf.to_container(cfg.scheduler, resolve=True)
        scheduler_options = {k: scheduler_cfg.pop(k) for k in ("interval", "frequency", "monitor") if k in scheduler_cfg}
        scheduler = hydra.utils.instantiate(scheduler_cfg)
    return SweepModule(
        net=net,
        task=task,
        loss=loss,
        num_classes=datamodule.num_classes if task.is_classification else None,
        # _convert_="all": plain lists, not ListConfig, in param_groups, so
        # checkpoints load with torch.load(weights_only=True).
        optimizer=hydra.utils.instantiate(cfg.optimizer, _convert_="all"),
        scheduler=scheduler,
        scheduler_options=scheduler_options,
        param_groups=OmegaConf.to_container(cfg.param_groups, resolve=True),
        target_scale=datamodule.target_scale_,
    )


def build_trainer(cfg: DictConfig, loggers: list[Any], run_dir: Path, extra_callbacks: list[Any] | None = None) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sweeplab.record.checkpoints import atomic_checkpoint_io

    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c] + (extra_callbacks or [])
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[atomic_checkpoint_io()],
        enable_progress_bar=any(type(c).__name__.endswith("ProgressBar") for c in callbacks),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        default_root_dir=str(run_dir),
    )
    return trainer


def fit_torch(
    module: Any, trainer: Any, datamodule: Any, run_dir: Path, ckpt_path: Path | None = None
) -> tuple[dict[str, float], list[Path]] | None:
    """Step 4-5 for a torch network: fit, test the best checkpoint, write reports."""
    from sweeplab.families.torch.module import LightningData

    trainer.fit(module, datamodule=LightningData(datamodule), ckpt_path=str(ckpt_path) if ckpt_path else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    stages = ("train/", "val/", "test/")
    # Last-epoch train/val values; trainer.test() replaces callback_metrics.
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(stages)}
    if trainer.world_size > 1:
        trainer = _single_device_tester(trainer)
        if trainer is None:
            return None  # a non-zero rank: rank 0 tests and reports
    # Test the best checkpoint; named by path because OnExceptionCheckpoint is
    # a ModelCheckpoint too, and "best" would leave Lightning to pick one.
    from lightning.pytorch.callbacks import OnExceptionCheckpoint

    checkpoint = next((c for c in trainer.checkpoint_callbacks if not isinstance(c, OnExceptionCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if best and Path(best).parent != Path(checkpoint.dirpath):
        # Lightning keeps the best_model_path of a checkpoint given as ckpt_path= (not its score): when this run
        # trains no epoch of its own, it names the other run's file. This run tests the weights it ends with.
        print(f"sweeplab-train: the best checkpoint on record ({best}) is another run's; testing the weights this run ends with")
        best = ""
    return test_and_report(module, trainer, datamodule, run_dir, best, metrics)


def test_and_report(
    module: Any, trainer: Any, datamodule: Any, run_dir: Path, best: str, metrics: dict[str, float]
) -> tuple[dict[str, float], list[Path]]:
    """Test ``best`` (a checkpoint path; "": the weights the module holds), then write the reports."""
    from sweeplab.families.torch.module import LightningData

    stages = ("train/", "val/", "test/")
    with warnings.catch_warnings():
        # Testing the run's own best.ckpt needs its weights only; Lightning's advice to pass the
        # callbacks that wrote it (said under DDP) is for fitting on from a checkpoint.
        warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
        trainer.test(module, datamodule=LightningData(datamodule), ckpt_path=best or None, verbose=False)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(stages)})
    return write_reports(module, trainer, datamodule, run_dir, metrics)


def write_reports(
    module: Any, trainer: Any, datamodule: Any, run_dir: Path, metrics: dict[str, float]
) -> tuple[dict[str, float], list[Path]]:
    """The test reports from the predictions the module's test made (``module.test_predictions``)."""
    import torch

    from sweeplab.data.base import Task
    from sweeplab.reports.files import write_reconstruction_report, write_test_report

    y_pred = torch.cat(module.test_predictions)
    y_pred = (y_pred.float() if y_pred.is_floating_point() else y_pred).numpy()  # numpy has no bfloat16
    y_true = torch.cat(module.test_targets).numpy()
    if module.task is Task.REGRESSION and len(datamodule.targets("test")) == len(y_true):
        y_true = datamodule.targets("test")  # exact, not a float32 round trip through the scaling
    if module.task is Task.EMBEDDING:  # word vectors: scored on the word benchmarks
        scores, files = module.net.evaluate(run_dir)
        if trainer.logger is not None:
            trainer.logger.log_metrics(scores, step=0)
        return {**metrics, **scores}, files
    if module.task is Task.RECONSTRUCTION:
        return metrics, write_reconstruction_report(y_true, y_pred, datamodule.input_shape, run_dir, datamodule.unstandardize)
    probabilities = torch.cat(module.test_probabilities).numpy() if module.test_probabilities else None
    return metrics, write_test_report(module.task, y_true, y_pred, run_dir, datamodule, probabilities)


def _single_device_tester(trainer: Any) -> Any:
    """After a multi-process fit: end the process group; rank 0 gets a one-device
    Trainer for the test (a DistributedSampler pads shards with repeated samples,
    so a sharded test would count some twice), other ranks get None."""
    import lightning.pytorch as pl
    import torch.distributed as dist

    rank = trainer.global_rank
    best = trainer.checkpoint_callback
    trainer.strategy.barrier()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if rank != 0:
        return None
    tester = pl.Trainer(
        accelerator=trainer.accelerator,
        devices=1,
        precision=trainer.precision,
        logger=trainer.logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    tester.callbacks.append(best)  # so the best checkpoint below is the one fit found
    return tester

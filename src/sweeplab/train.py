"""sweeplab-train: compose the config, train, test, log everything to MLflow.

    sweeplab-train                                   # digits, MLP, Adam
    sweeplab-train data=breast_cancer optimizer=sgd optimizer.lr=0.05 scheduler=cosine
    sweeplab-train -m optimizer=adam,sgd,rmsprop scheduler=none,step
    sweeplab-train experiment=optimizers_digits      # a preset from experiments/

The whole run reads top to bottom in ``run``.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from sweeplab import __version__, console, liveness, optuna_search, provenance, sweeps, tracking
from sweeplab.checkpoints import claim_folders, load_checkpoint, refuse_foreign
from sweeplab.config import CONFIG_PATH, check_accelerator, check_choices, check_config, register_experiments
from sweeplab.errors import Interrupted
from sweeplab.publish import Outbox, log_points_the_checkpoint_holds, publish, upload_checkpoints
from sweeplab.start_up import collector_back_on, pause_collector_for_start_up


def _overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside the CLI (tests, notebooks)
        return []


def _overrides_tag() -> str:
    """The command-line overrides, secrets masked, as one shell-quoted string
    (the tag sweeplab.overrides; compare splits it back with shlex)."""
    return shlex.join(tracking.mask_override(o) for o in _overrides())


def _model_choice(cfg: DictConfig) -> str:
    """The conf/model option name (e.g. knn), or the class name outside the CLI."""
    try:
        return str(HydraConfig.get().runtime.choices["model"])
    except (ValueError, KeyError):
        return str(cfg.model._target_).rsplit(".", 1)[-1]


def _choices() -> dict[str, str]:
    """The option picked in each config group (optimizer: sgd), whether on the command
    line or by a preset; empty outside the CLI."""
    try:
        chosen = HydraConfig.get().runtime.choices
    except ValueError:
        return {}
    return {str(g): str(o) for g, o in chosen.items() if o is not None and not str(g).startswith("hydra/")}


def _run_name(cfg: DictConfig) -> str:
    # Where a run lands or how it starts is not what it is: the experiment already holds it.
    hidden = ("paths.", "hydra.", "logger.tracking_uri", "resume=", "skip_finished=", "experiment_name=")
    shown = [tracking.mask_override(o) for o in _overrides() if not o.lstrip("+~").startswith(hidden)]
    return cfg.run_name or ",".join(shown) or "default"


def _build_loggers(cfg: DictConfig, run_name: str, identity: str, resume_run_id: str | None = None, lightning: bool = True) -> list[Any]:
    """The run's loggers: the one ``logger=`` names (MLflow by default: the run's
    record), then those under ``logger.also`` (logger=many: TensorBoard, CSV),
    which receive the same metrics under the same names. A family that trains
    without Lightning gets its MLflow record as ``tracking.MlflowRun``."""
    if not cfg.get("logger"):
        return []
    main = OmegaConf.create({k: v for k, v in cfg.logger.items() if k not in tracking.SWEEPLAB_LOGGER_KEYS})
    if not lightning and tracking.uses_mlflow(cfg):
        main._target_ = tracking.MLFLOW_RUN
    also = [hydra.utils.instantiate(c) for c in (cfg.logger.get("also") or {}).values() if c]
    return [_build_logger(cfg, main, run_name, identity, resume_run_id), *also]


def _build_logger(cfg: DictConfig, main: DictConfig, run_name: str, identity: str, resume_run_id: str | None) -> Any:
    if not tracking.uses_mlflow(cfg):
        return hydra.utils.instantiate(main)
    uri = tracking.tracking_uri(cfg)
    if tracking.has_password(uri):  # MLflow prints "View run at <uri with its password>" when a run ends
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    tracking.ensure_experiment(cfg)  # checks a server answers, before anything waits on it
    for stale in tracking.close_stale_runs(cfg, keep=resume_run_id):
        print(f"sweeplab-train: run {stale.info.run_id} of this config was left RUNNING by a process that is gone; marked KILLED")
    if resume_run_id:
        return hydra.utils.instantiate(main, tracking_uri=uri, run_id=resume_run_id)
    tags = {
        "sweeplab.version": __version__,
        "sweeplab.overrides": _overrides_tag(),
        "sweeplab.config_hash": identity,
        **{f"sweeplab.choice.{group}": option for group, option in _choices().items()},  # compare --group-by optimizer
        **liveness.process_tags(),
        **provenance.creation_tags(provenance.command_line()),
        **({"sweeplab.sweep_id": sid, "sweeplab.sweeps": sid} if (sid := tracking.sweep_id()) else {}),
        **({"sweeplab.swept": keys} if (keys := sweeps.swept()) else {}),  # where a comparison of the sweep starts
        **optuna_search.job_tags(),  # the study and trial number of an optuna trial
        **{str(k): str(v) for k, v in tracking.mask_secrets(dict(cfg.get("tags") or {})).items()},
    }
    return hydra.utils.instantiate(main, tracking_uri=uri, run_name=run_name, tags=tags)


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def _gpu_count_from_the_runtime_without_nvml() -> None:
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1: torch then counts GPUs through
    NVIDIA's management library, which keeps forked processes able to start CUDA, and caches no
    answer until CUDA starts. Adam and AdamW ask at every step: where that library is missing
    (no NVIDIA driver, no GPU) each question is a failed dlopen, 45 us a step. There, the CUDA
    runtime's cached answer (1 us) is used instead; there is no GPU a fork could need."""
    import ctypes

    if os.environ.get(NVML_CHECK) != "1" or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ[NVML_CHECK]


def _quiet_lightning() -> None:
    """Keep the console to the progress bar and results: Lightning's INFO lines
    (device summary, tips) and two known-harmless warnings add nothing."""
    import warnings

    import lightning.pytorch  # noqa: F401  importing it sets its logger to INFO: import first, then quieten

    _gpu_count_from_the_runtime_without_nvml()  # and its environment variable
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # MLflow's SQLite layer logs a full traceback for each failed write before
    # raising it; the raised error is reported in one line (errors.one_line).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logging.getLogger("gensim").setLevel(logging.WARNING)  # per-epoch and per-benchmark-section INFO lines
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # On a machine with SLURM's client tools, Lightning suggests srun for every run started by hand.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")
    # Lightning 2.6 reports its implicit ckpt_path="last" lookup on every fresh fit.
    warnings.filterwarnings("ignore", message=r".*\.fit\(ckpt_path=None\)` was called without a model.*")
    warnings.filterwarnings("ignore", message=".*there is no last checkpoint available.*")
    # model.freeze_backbone=true keeps the backbone in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def _build_module(cfg: DictConfig, datamodule: Any) -> Any:
    """A torch network with its loss, optimizer and scheduler, in the LightningModule."""
    from sweeplab.data.text import check_text_pairing
    from sweeplab.module import SweepModule

    # Text data modules hand their vocabulary to the models that read it (model_inputs).
    inputs = datamodule.model_inputs() if hasattr(datamodule, "model_inputs") else {}
    check_text_pairing(datamodule, cfg.model, _model_choice(cfg))
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


def _build_trainer(cfg: DictConfig, loggers: list[Any], run_dir: Path, extra_callbacks: list[Any] | None = None) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sweeplab.checkpoints import atomic_checkpoint_io

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


class TorchFamily:
    """A torch network on a data module, trained and tested by Lightning."""

    kind = "torch"
    resumable = True  # from its Lightning checkpoint
    lightning = True
    run_tags: dict[str, str] = {}  # replaced, never changed in place, once fitted (sweeplab.pruned)

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    def prepare(self) -> None:
        check_accelerator(self.cfg)
        seed_everything(self.cfg.seed)
        self.datamodule = hydra.utils.instantiate(self.cfg.data)
        self.datamodule.setup()
        _quiet_lightning()  # the data passed its checks: now Lightning's ~5 s of imports
        self.module = _build_module(self.cfg, self.datamodule)
        self.task = self.module.task

    def attach(self, loggers: list[Any], run_dir: Path) -> None:
        # An optuna trial with a pruner reports the metric it is scored on after each validation.
        keys = optuna_search.objective_keys(self.cfg)
        self.pruning = optuna_search.pruning_callback(keys[0]) if keys else None
        self.trainer, self.run_dir = _build_trainer(self.cfg, loggers, run_dir, [self.pruning] if self.pruning else []), run_dir
        facts = getattr(self.module.net, "facts", None)  # e.g. the share of the vocabulary pre-trained vectors cover
        for logger in loggers if facts else []:
            logger.log_metrics(facts, step=0)

    def served_model(self) -> tuple[Any, str]:
        # On the CPU (training is over): the logged model then loads on any machine, GPU or not.
        return self.module.net.cpu(), "pytorch"

    def fit(self, start_from: Path | None) -> tuple[dict[str, float], list[Path]] | None:
        fitted = _fit_torch(self.module, self.trainer, self.datamodule, self.run_dir, start_from)
        if self.pruning is not None and self.pruning.pruned_epoch is not None:  # stopped early; tested as any run
            self.run_tags = {"sweeplab.pruned": "true", "sweeplab.pruned_epoch": str(self.pruning.pruned_epoch)}
        profiles = sorted(self.run_dir.glob("*-profile.txt"))  # debug=profiler: its reports join the artifacts
        for profile in profiles:
            print(f"sweeplab-train: profiler report {profile}")
        return None if fitted is None else (fitted[0], [*fitted[1], *profiles])


def _family(cfg: DictConfig) -> Any:
    """The family that runs this config: an agent in an environment (env=), a
    scikit-learn estimator (model= naming one), or a torch network. Each has
    prepare() (seed, data, model, every check: before a run exists), attach(loggers,
    run_dir) (the first logger is the run's record) and fit(start_from) ->
    (metrics, report files); kind, resumable, lightning (whether it trains in a
    Lightning Trainer) and, once prepared, task."""
    from sweeplab import classical

    if cfg.get("env"):
        from sweeplab.rl.family import ReinforcementFamily

        return ReinforcementFamily(cfg)
    if classical.is_estimator_config(cfg.model):
        return classical.ClassicalFamily(cfg, _model_choice(cfg))
    return TorchFamily(cfg)


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


def _fit_torch(
    module: Any, trainer: Any, datamodule: Any, run_dir: Path, ckpt_path: Path | None = None
) -> tuple[dict[str, float], list[Path]] | None:
    """Step 4-5 for a torch network: fit, test the best checkpoint, write reports."""
    import torch

    from sweeplab.data.base import Task
    from sweeplab.module import LightningData
    from sweeplab.reports import write_reconstruction_report, write_test_report

    lightning_data = LightningData(datamodule)
    trainer.fit(module, datamodule=lightning_data, ckpt_path=str(ckpt_path) if ckpt_path else None)
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
    trainer.test(module, datamodule=lightning_data, ckpt_path=best or None, verbose=False)
    metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(stages)})
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


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test one config; return the logged metrics."""
    pause_collector_for_start_up()
    settle(cfg)
    check_config(cfg)  # bad input fails at once: Lightning (~5 s of imports) is imported once the data has passed its checks
    tracking.check_reachable(cfg)
    family = _family(cfg)
    identity = tracking.config_hash(cfg)  # of the config as given, before anything below fills it in
    start_from, resume_run_id = _starting_point(cfg, family)
    if family.lightning:
        refuse_foreign(cfg, resume_run_id)  # a fixed run folder must not lend the last run's checkpoints to this one
    run_dir = Path(cfg.paths.run_dir)
    liveness.claim(run_dir, resume_run_id)  # one process trains into a run folder at a time
    handlers, user_uri = _catch_signals(), os.environ.get("MLFLOW_TRACKING_URI")
    sweeps.watch_sweep_parent()
    stop_log = console.tee_to(run_dir / "train.log")  # what the run prints, warnings too, also in its folder
    loggers, logger, outbox, monitor = [], None, None, None
    try:  # from here on, whatever happens, _leave undoes what the lines above set up
        if cfg.get("print_config", True):
            console.print_config(tracking.mask_secrets(tracking.resolved(cfg)))

        # 1-3. data (or environment) and model: everything is checked before a run exists
        family.prepare()
        run_name = _run_name(cfg)
        loggers = _build_loggers(cfg, run_name, identity, resume_run_id, family.lightning)
        family.attach(loggers, run_dir)
        logger = loggers[0] if loggers else None  # the run's record

        # 4-5. fit, then evaluate on held-out data, tracked
        run_id = logger.run_id if logger is not None and tracking.uses_mlflow(cfg) else None
        monitor = tracking.system_metrics(cfg, run_id)
        if family.lightning:
            claim_folders(cfg, run_id)
        if resume_run_id:
            tracking.reopen_run(logger, run_id)
            if start_from is not None:
                log_points_the_checkpoint_holds(logger.experiment, run_id, start_from)
        if run_id:  # the run's MLflow writes; a server that stops answering does not stop the run (sweeplab sync)
            outbox = Outbox(logger.experiment, run_id, run_dir, tracking.tracking_uri(cfg))
            outbox.attach(logger, checkpoints_as_written=cfg.logger.get("log_checkpoints") == "all")
            tracking.describe_run(logger, run_id, run_dir, family.task.value, family.kind, cfg)
            provenance.record(logger.experiment, run_id, family, _choices().get("data", "data"), bool(resume_run_id))
        config_file = run_dir / "config.yaml"
        config_file.write_text(OmegaConf.to_yaml(tracking.mask_secrets(tracking.resolved(cfg))))
        diff = provenance.write_diff(run_dir) if run_id else None
        collector_back_on()  # start-up is over: training runs with Python's garbage collector on
        started = time.perf_counter()
        fitted = family.fit(start_from)
        if fitted is None:  # a non-zero DDP rank: rank 0 tracks and reports
            return {}
        metrics, reports = fitted
        metrics[tracking.TIME_METRIC] = time.perf_counter() - started  # a sweeper can minimise it (not logged: MLflow has it)
        if outbox:  # its files, model and checkpoints, then FINISHED: the store alone holds the run
            files = [config_file, *([diff] if diff else []), *reports, run_dir / "train.log"]
            publish(cfg, outbox, family, run_dir, files, _description(metrics))
        recorded, outbox = run_id, None  # the record is complete: nothing below changes its status
        if _handling_signals:  # and a late Ctrl-C only ends the process
            _on_signal(_exit_now)
        _print_summary(cfg, run_name, metrics, run_dir, recorded)
        return metrics
    except BaseException as exc:
        closed = _close_unfinished(cfg, outbox, exc, run_dir)
        if closed is exc:
            raise  # as it came, its cause kept: one_line names the root error (a data module's, under Hydra's wrapper)
        raise closed from None
    finally:
        collector_back_on()
        _leave(run_dir, handlers, user_uri, loggers, monitor)
        stop_log()


def _close_unfinished(cfg: DictConfig, outbox: Outbox | None, exc: BaseException, run_dir: Path) -> BaseException:
    """Mark the run KILLED (interrupted) or FAILED, with the error as a tag; return what to raise."""
    # Lightning turns Ctrl-C / SIGTERM into a graceful stop and sys.exit(1): the signal says what happened.
    if _signals and not isinstance(exc, Interrupted):
        exc = Interrupted(_signals[-1])
    if outbox:
        status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
        if status == "KILLED":  # resume=<run id> then works from any machine that reaches the store
            try:
                upload_checkpoints(cfg, outbox, run_dir, interrupted=True)
            except Exception as upload_error:  # noqa: BLE001 - the interruption is what gets reported
                print(f"sweeplab-train: checkpoints not uploaded ({type(upload_error).__name__}: {upload_error})", file=sys.stderr)
        outbox.tag("sweeplab.error", f"{type(exc).__name__}: {exc}"[:5000])
        outbox.close(status)
        if status == "KILLED":
            print(
                f"sweeplab-train: interrupted; MLflow run {outbox.run_id} marked KILLED, checkpoints in "
                f"{run_dir / 'checkpoints'}; add resume=auto to the same command to continue it",
                file=sys.stderr,
            )
    return exc


def _leave(run_dir: Path, handlers: dict[int, Any], user_uri: str | None, loggers: list[Any], monitor: Any) -> None:
    """What every run undoes, however it ended."""
    if monitor is not None:
        monitor.finish()
    # A W&B run stays open until finished: the next run in this process would join it, and
    # its offline record is complete only once finished (its writer is another process).
    for extra in loggers:
        finish = getattr(getattr(extra, "_experiment", None), "finish", None)
        if callable(finish):
            finish()
    liveness.release(run_dir)
    sweeps.run_closed()
    if not _handling_signals:  # a notebook or a sweep worker gets its own handlers back
        _restore_signals(handlers)
    # MLFlowLogger calls mlflow.set_tracking_uri, which sets this variable
    # for the whole process; the next run in it must not inherit our store.
    if user_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_uri


def seed_everything(seed: int, torch: bool = True) -> None:
    """What ``lightning.pytorch.seed_everything(seed, workers=True)`` does, without importing
    Lightning: Python's, numpy's and (for a family that uses it) torch's generators, and the
    variables Lightning's DataLoader workers and DDP processes read their seeds from."""
    import random

    import numpy as np

    os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"] = str(seed), "1"
    random.seed(seed)
    np.random.seed(seed)
    if torch:
        import torch as torch_module

        torch_module.manual_seed(seed)


def settle(cfg: DictConfig) -> None:
    """Drop the groups a run does not use (an RL run has no data set), so its
    config file, parameters and identity hold only what it computes."""
    if cfg.get("env") or cfg.get("agent"):
        from sweeplab.rl.family import drop_unused

        drop_unused(cfg)


def _starting_point(cfg: DictConfig, family: Any) -> tuple[Path | None, str | None]:
    """(checkpoint to start from, MLflow run to continue): an interrupted run
    continues in its own folder and MLflow run."""
    start_from, resume_run_id = None, None
    if cfg.get("resume") and tracking.uses_mlflow(cfg):
        found = tracking.find_resumable(cfg) if family.resumable else None
        if found is None:
            why = "no unfinished run of this config with a checkpoint" if family.resumable else f"a {family.kind} run has no checkpoint"
            print(f"sweeplab-train: resume={cfg.resume}: {why}; starting a new run")
        else:
            resume_run_id, old_dir, start_from = found
            liveness.claim(old_dir, resume_run_id)  # before the run is touched: another process may be training it
            with open_dict(cfg):
                cfg.paths.run_dir = str(old_dir)
            print(f"sweeplab-train: resuming MLflow run {resume_run_id} from {start_from}")
    elif cfg.get("ckpt_path"):
        start_from = Path(cfg.ckpt_path)
    if start_from is not None and not resume_run_id:  # refuse a missing, foreign or unsafe file before any run exists
        load_checkpoint(start_from, key="ckpt_path", training_state=True)
    return start_from, resume_run_id


def _description(metrics: dict[str, float]) -> str:
    """The run page's description (Markdown): the command that trains this run again, and its test scores."""
    from sweeplab.compare import reproduce_command

    command = reproduce_command({"tags.sweeplab.overrides": _overrides_tag(), "tags.sweeplab.sweep_id": tracking.sweep_id()})
    scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
    return f"Reproduce:\n\n```\n{command}\n```\n\nTest: {scores or 'none'}\n"


def _print_summary(cfg: DictConfig, run_name: str, metrics: dict[str, float], run_dir: Path, run_id: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="test metrics")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for key in sorted(k for k in metrics if k.startswith("test/")):
        table.add_row(key, f"{metrics[key]:.4f}")
    console = Console(stderr=False)
    console.print(f"run: {run_name}", soft_wrap=True)  # a long name of overrides must not fold the table
    console.print(table)
    console.print(f"run folder: {run_dir}")
    if run_id:
        console.print(f"MLflow run {run_id} in experiment '{cfg.experiment_name}'")
        console.print(f"compare runs: {tracking.ui_command(tracking.tracking_uri(cfg))}", soft_wrap=True)


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> float | list[float] | None:
    """What a sweeper optimises: ``optimized_metric`` if set, or a list of them
    (multi-objective); ``time/fit_s`` is the seconds the run took to train and test."""
    values = [metrics.get(key, math.nan) for key in optuna_search.objective_keys(cfg)]
    return None if not values else values[0] if len(values) == 1 else values


_failure: list[BaseException] = []


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="train")
def _hydra_entry(cfg: DictConfig) -> float | None:
    pause_collector_for_start_up()  # a launcher's worker process starts here (joblib, submitit)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        check_choices(HydraConfig.get().runtime.choices)
        settle(cfg)
        if multirun and cfg.get("skip_finished") and tracking.uses_mlflow(cfg):
            # Resumable sweeps: a config that already FINISHED here is not trained again.
            done = tracking.find_finished(cfg)
            if done is not None:
                run_id, metrics = done
                sweeps.join_sweep(cfg, run_id, str(tracking.sweep_id()))
                sweeps.record_job("skipped", run_id)
                print(f"sweeplab-train: skipping job {HydraConfig.get().job.num}: identical config finished as run {run_id}")
                return _objective(cfg, metrics)
        metrics = run(cfg)
        if multirun:
            sweeps.record_job("trained")
        return _objective(cfg, metrics)
    except Exception as exc:
        if not multirun:
            # Handed to main() rather than raised through Hydra, which would
            # print its own extra line before ours.
            _failure.append(exc)
            return None
        # In a sweep one bad run must not end the others: it is recorded
        # FAILED in MLflow, reported here and in the sweep's summary, and the
        # sweeper gets a worst value.
        from sweeplab.errors import one_line

        print(f"sweeplab-train: run {HydraConfig.get().job.num} failed: {one_line(exc)}", file=sys.stderr)
        sweeps.record_job("failed", error=one_line(exc))
        return -math.inf if cfg.get("optimized_mode", "max") == "max" else math.inf
    finally:
        collector_back_on()  # a job that was skipped or failed before training ends start-up too


_signals: list[int] = []  # the signals this process received: Lightning hides them behind sys.exit(1)
_handling_signals = False  # set by main(): the console script owns SIGINT/SIGTERM, a notebook does not


def _interrupt(signum: int, frame: Any) -> None:
    _signals.append(signum)
    raise Interrupted(signum)


def _exit_now(signum: int, frame: Any) -> None:
    """After a run is closed nothing is left to save: leave at once with the signal's
    exit code, rather than raise into interpreter shutdown (a traceback from atexit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def _on_signal(handler: Any) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def _catch_signals() -> dict[int, Any]:
    """Ctrl-C and SIGTERM close the run as KILLED, naming the signal, wherever
    the run executes: the console script, a sweep's worker, a notebook.
    Returns the handlers it replaced (signals reach only the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    _signals.clear()
    _on_signal(_interrupt)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def main() -> None:
    """Console script ``sweeplab-train``."""
    from sweeplab.errors import run_cli

    global _handling_signals
    pause_collector_for_start_up()  # Hydra's composition and a sweep's set-up are start-up too
    register_experiments()
    # Ctrl-C and SIGTERM (a scheduler, `kill`) stop a run the same way: checkpoint
    # kept, MLflow run KILLED with the signal named, exit 128 + signal number.
    _handling_signals = True
    _on_signal(_interrupt)

    def entry() -> None:
        try:
            _hydra_entry()
        except KeyboardInterrupt:
            sweeps.close_interrupted()  # runs an interrupted sweep's workers left RUNNING
            raise
        if _failure:
            raise _failure.pop()

    run_cli(entry, "sweeplab-train")


if __name__ == "__main__":
    main()

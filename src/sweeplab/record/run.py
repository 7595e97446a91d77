"""One run's MLflow record, its whole life in one object: ``train.run`` opens it
(a new run, or the interrupted one it resumes), starts it (reopened, described,
its provenance, config and the points a resumed checkpoint holds), finishes it
(files, model, checkpoints, then FINISHED) or fails it (KILLED or FAILED, the
error as a tag), and leaves it (system metrics and other loggers closed).

Every MLflow write of a run goes through its ``Outbox``: a server that stops
answering does not stop the run (``sweeplab sync`` sends what it kept).
"""

from __future__ import annotations

import os
import shlex
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sweeplab import __version__, redact
from sweeplab.config import NAME_LENGTHS, choices, overrides
from sweeplab.record import liveness, provenance, tracking
from sweeplab.record.checkpoints import claim_folders
from sweeplab.record.publish import Outbox, log_points_the_checkpoint_holds, publish, upload_checkpoints
from sweeplab.record.tags import reproduce_command


def overrides_tag() -> str:
    """The command-line overrides, secrets masked, as one shell-quoted string
    (the tag sweeplab.overrides; compare splits it back with shlex)."""
    return shlex.join(redact.mask_override(o) for o in overrides())


def _short(value: str) -> str:
    """A float to 4 significant digits (0.08942616560255211 -> 0.08943); anything else as typed."""
    if not any(c in value for c in ".eE") or value.lower() in ("nan", "inf", "-inf"):
        return value
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def run_name(cfg: DictConfig) -> str:
    """``run_name``, else the overrides that change what is trained, floats to 4 significant
    digits (the params and the sweeplab.overrides tag keep them whole). Where a run lands, how
    it starts or shows, and which search proposed it are not what it is."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    callbacks = cfg.get("callbacks") or {}
    shown = []
    for override in overrides():
        key, _, value = override.lstrip("+~").partition("=")
        if key.startswith("hydra.") or key in ("hparams_search", "resume") or tracking.bookkeeping(key, callbacks):
            continue
        shown.append(redact.mask_override(f"{override.partition('=')[0]}={_short(value)}" if value else override))
    # MLflow's SQL stores keep 250 characters of a run's name (PostgreSQL refuses more); all of
    # the overrides are in the params and the sweeplab.overrides tag.
    return tracking.cut(",".join(shown) or "default", NAME_LENGTHS["run_name"])


class RunRecord:
    """The record of one run in ``run_dir``: ``identity`` is its config hash; ``resume_run_id``
    the MLflow run it continues, if any."""

    def __init__(self, cfg: DictConfig, run_dir: Path, identity: str, resume_run_id: str | None) -> None:
        self.cfg, self.run_dir, self.identity, self.resume_run_id = cfg, run_dir, identity, resume_run_id
        self.name = run_name(cfg)
        self.loggers: list[Any] = []
        self.run_id: str | None = None
        self.outbox: Outbox | None = None
        self.monitor: Any = None
        self.config_file = run_dir / "config.yaml"
        self.diff: Path | None = None

    @cached_property
    def git(self) -> provenance.GitState | None:
        """The code's git state, read once for the run's tags and its diff."""
        return provenance.git_state(tracking.sweep_id())

    # -- open: the loggers, the first of them the run's record --------------------

    def open(self, lightning: bool, job_tags: dict[str, str]) -> list[Any]:
        """The run's loggers: the one ``logger=`` names (MLflow by default: the run's
        record), then those under ``logger.also`` (logger=many: TensorBoard, CSV),
        which receive the same metrics under the same names. A family that trains
        without Lightning gets its MLflow record as ``tracking.MlflowRun``. ``job_tags``:
        what a sweep says of this job (its sweep, swept keys, Optuna trial)."""
        cfg = self.cfg
        if not cfg.get("logger"):
            return []
        main = OmegaConf.create({k: v for k, v in cfg.logger.items() if k not in tracking.SWEEPLAB_LOGGER_KEYS})
        if not lightning and tracking.uses_mlflow(cfg):
            main._target_ = tracking.MLFLOW_RUN
        also = [hydra.utils.instantiate(c) for c in (cfg.logger.get("also") or {}).values() if c]
        self.loggers = [self._main_logger(main, job_tags), *also]
        return self.loggers

    def _main_logger(self, main: DictConfig, job_tags: dict[str, str]) -> Any:
        cfg = self.cfg
        if not tracking.uses_mlflow(cfg):
            return hydra.utils.instantiate(main)
        uri = tracking.tracking_uri(cfg)
        if redact.has_password(uri):  # MLflow prints "View run at <uri with its password>" when a run ends
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        tracking.ensure_experiment(cfg)  # checks a server answers, before anything waits on it
        for stale in tracking.close_stale_runs(cfg, keep=self.resume_run_id):
            print(f"sweeplab-train: run {stale.info.run_id} of this config was left RUNNING by a process that is gone; marked KILLED")
        if self.resume_run_id:
            return hydra.utils.instantiate(main, tracking_uri=uri, run_id=self.resume_run_id)
        tags = {
            "sweeplab.version": __version__,
            "sweeplab.overrides": overrides_tag(),
            "sweeplab.config_hash": self.identity,
            **{f"sweeplab.choice.{group}": option for group, option in choices().items()},  # compare --group-by optimizer
            **liveness.process_tags(),
            **provenance.creation_tags(provenance.command_line(), self.git),
            **job_tags,
            **{str(k): str(v) for k, v in redact.mask_secrets(dict(cfg.get("tags") or {})).items()},
        }
        return hydra.utils.instantiate(main, tracking_uri=uri, run_name=self.name, tags=tags)

    # -- start: everything written before the first step ----------------------------

    def start(self, family: Any, start_from: Path | None) -> None:
        """Reopen a resumed run, describe the run and its provenance, write its config."""
        cfg, logger = self.cfg, (self.loggers[0] if self.loggers else None)
        self.run_id = logger.run_id if logger is not None and tracking.uses_mlflow(cfg) else None
        self.monitor = tracking.system_metrics(cfg, self.run_id)
        if family.lightning:
            claim_folders(cfg, self.run_id)
        if self.resume_run_id:
            tracking.reopen_run(logger, self.run_id)
            if start_from is not None:
                log_points_the_checkpoint_holds(logger.experiment, self.run_id, start_from)
        if self.run_id:
            self.outbox = Outbox(logger.experiment, self.run_id, self.run_dir, tracking.tracking_uri(cfg))
            self.outbox.attach(logger, checkpoints_as_written=cfg.logger.get("log_checkpoints") == "all")
            tags = provenance.setup_tags(family)
            params = tracking.describe_run(
                logger, self.run_id, self.run_dir, family.task.value, family.kind, cfg, tags, bool(self.resume_run_id)
            )
            self.outbox.described = logger.experiment_id, params
            provenance.record(logger.experiment, self.run_id, family, choices().get("data", "data"), bool(self.resume_run_id))
        self.config_file.write_text(OmegaConf.to_yaml(redact.mask_secrets(tracking.resolved(cfg))))
        self.diff = provenance.write_diff(self.run_dir, self.git) if self.run_id else None

    # -- the three ways it ends -------------------------------------------------------

    def finish(self, family: Any, reports: list[Path], metrics: dict[str, float]) -> None:
        """Its files, model and checkpoints, then FINISHED: the store alone holds the run.
        Nothing afterwards changes its status."""
        if self.outbox:
            files = [self.config_file, *([self.diff] if self.diff else []), *reports, self.run_dir / "train.log"]
            publish(self.cfg, self.outbox, family, self.run_dir, files, self._description(metrics))
        self.outbox = None

    def fail(self, exc: BaseException) -> None:
        """KILLED (interrupted: its checkpoints uploaded, so resume works from any machine
        that reaches the store) or FAILED, with the error as a tag."""
        outbox, self.outbox = self.outbox, None
        if outbox is None:
            return
        status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
        if status == "KILLED":
            try:
                upload_checkpoints(self.cfg, outbox, self.run_dir, interrupted=True)
            except Exception as upload_error:  # noqa: BLE001 - the interruption is what gets reported
                print(f"sweeplab-train: checkpoints not uploaded ({type(upload_error).__name__}: {upload_error})", file=sys.stderr)
        outbox.tag("sweeplab.error", f"{type(exc).__name__}: {exc}"[:5000])
        outbox.close(status)
        if status == "KILLED":
            print(
                f"sweeplab-train: interrupted; MLflow run {outbox.run_id} marked KILLED, checkpoints in "
                f"{self.run_dir / 'checkpoints'}; add resume=auto to the same command to continue it",
                file=sys.stderr,
            )

    def leave(self) -> None:
        """What every run undoes, however it ended."""
        if self.monitor is not None:
            self.monitor.finish()
        # A W&B run stays open until finished: the next run in this process would join it, and
        # its offline record is complete only once finished (its writer is another process).
        for extra in self.loggers:
            finish = getattr(getattr(extra, "_experiment", None), "finish", None)
            if callable(finish):
                finish()

    def _description(self, metrics: dict[str, float]) -> str:
        """The run page's description (Markdown): the command that trains this run again, and its test scores."""
        command = reproduce_command({"tags.sweeplab.overrides": overrides_tag(), "tags.sweeplab.sweep_id": tracking.sweep_id()})
        scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("test/"))
        return f"Reproduce:\n\n```\n{command}\n```\n\nTest: {scores or 'none'}\n"

"""sweeplab-train: compose the config, train, test, log everything to MLflow.

    sweeplab-train                                   # digits, MLP, Adam
    sweeplab-train data=breast_cancer optimizer=sgd optimizer.lr=0.05 scheduler=cosine
    sweeplab-train -m optimizer=adam,sgd,rmsprop scheduler=none,step
    sweeplab-train experiment=optimizers_digits      # a preset from experiments/

The whole run reads top to bottom in ``run``: a family trains (families/), its
MLflow record lives in one object (record/run.py), a sweep's job reports to its
sweep (sweeps/).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from sweeplab import console, redact, signals
from sweeplab.config import CONFIG_PATH, check_choices, check_config, model_choice, register_experiments
from sweeplab.errors import Interrupted
from sweeplab.record import liveness, tracking
from sweeplab.record.checkpoints import load_checkpoint, refuse_foreign
from sweeplab.record.identity import config_hash
from sweeplab.record.run import RunRecord
from sweeplab.start_up import collector_back_on, pause_collector_for_start_up, thaw_after_first_run
from sweeplab.sweeps import callback as sweep_job
from sweeplab.sweeps import optuna, parent


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test one config; return the logged metrics."""
    pause_collector_for_start_up()
    settle(cfg)
    check_config(cfg)  # bad input fails at once: Lightning (~5 s of imports) is imported once the data has passed its checks
    tracking.check_reachable(cfg)
    family = _family(cfg)
    identity = config_hash(cfg)  # of the config as given, before anything below fills it in
    start_from, resume_run_id = _starting_point(cfg, family)
    if family.lightning:
        refuse_foreign(cfg, resume_run_id)  # a fixed run folder must not lend the last run's checkpoints to this one
    run_dir = Path(cfg.paths.run_dir)
    liveness.claim(run_dir, resume_run_id)  # one process trains into a run folder at a time
    handlers, user_uri = signals.catch(), os.environ.get("MLFLOW_TRACKING_URI")
    sweep_job.watch_sweep_parent()
    stop_log = console.tee_to(run_dir / "train.log")  # what the run prints, warnings too, also in its folder
    record = RunRecord(cfg, run_dir, identity, resume_run_id)
    try:  # from here on, whatever happens, the finally below undoes what the lines above set up
        # 1-3. data (or environment) and model: everything is checked before a run exists,
        # and before the config tree is printed (a bad data.path is the last line, not above 95 others)
        family.prepare()
        if cfg.get("print_config", True):
            in_sweep = tracking.sweep_id() is not None
            console.print_job_config(lambda: redact.mask_secrets(tracking.resolved(cfg)), in_sweep, record.name, record.config_file)
        family.attach(record.open(family.lightning, _job_tags()), run_dir)

        # 4-5. fit, then evaluate on held-out data, tracked
        record.start(family, start_from)
        collector_back_on()  # start-up is over: training runs with Python's garbage collector on
        started = time.perf_counter()
        fitted = family.fit(start_from)
        if fitted is None:  # a non-zero DDP rank: rank 0 tracks and reports
            return {}
        metrics, reports = fitted
        metrics[tracking.TIME_METRIC] = time.perf_counter() - started  # a sweeper can minimise it (not logged: MLflow has it)
        record.finish(family, reports, metrics)
        signals.exit_on_late_signal()
        _print_summary(cfg, record.name, metrics, run_dir, record.run_id)
        return metrics
    except BaseException as exc:
        # Lightning turns Ctrl-C / SIGTERM into a graceful stop and sys.exit(1): the signal says what happened.
        closed = Interrupted(signals.received()) if signals.received() and not isinstance(exc, Interrupted) else exc
        record.fail(closed)
        if closed is exc:
            raise  # as it came, its cause kept: one_line names the root error (a data module's, under Hydra's wrapper)
        raise closed from None
    finally:
        collector_back_on()
        record.leave()
        thaw_after_first_run()
        liveness.release(run_dir)
        sweep_job.run_closed()
        signals.restore(handlers)
        # MLFlowLogger calls mlflow.set_tracking_uri, which sets this variable
        # for the whole process; the next run in it must not inherit our store.
        if user_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = user_uri
        stop_log()


def _job_tags() -> dict[str, str]:
    """What a sweep says of this job, as tags of its run: the sweep, the keys it sweeps
    (where a comparison of the sweep starts), the Optuna study and trial."""
    return {
        **({"sweeplab.sweep_id": sid, "sweeplab.sweeps": sid, **parent.job_tags()} if (sid := tracking.sweep_id()) else {}),
        **({"sweeplab.swept": keys} if (keys := sweep_job.swept()) else {}),
        **optuna.job_tags(),
    }


def _family(cfg: DictConfig) -> Any:
    """The family that runs this config: an agent in an environment (env=), a
    scikit-learn estimator (model= naming one), or a torch network. Each has
    prepare() (seed, data, model, every check: before a run exists), attach(loggers,
    run_dir) (the first logger is the run's record) and fit(start_from) ->
    (metrics, report files); kind, resumable, lightning (whether it trains in a
    Lightning Trainer) and, once prepared, task."""
    from sweeplab.families import classical

    if cfg.get("env"):
        from sweeplab.families.rl import ReinforcementFamily

        return ReinforcementFamily(cfg)
    if classical.is_estimator_config(cfg.model):
        return classical.ClassicalFamily(cfg, model_choice(cfg))
    from sweeplab.families.torch.family import TorchFamily

    return TorchFamily(cfg)


def settle(cfg: DictConfig) -> None:
    """Drop the groups a run does not use (an RL run has no data set), so its
    config file, parameters and identity hold only what it computes."""
    if cfg.get("env") or cfg.get("agent"):
        from sweeplab.families.rl import drop_unused

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
        uri = tracking.tracking_uri(cfg)
        console.print(f"MLflow run {run_id} in experiment '{cfg.experiment_name}'")
        if (experiment_id := tracking.experiment_id_of(uri, cfg.experiment_name)) is not None:
            page = tracking.runs_page(uri, experiment_id, run_id=run_id)
            console.print(f"see it: {tracking.see_in_ui(uri, page)}", soft_wrap=True)
        console.print(f"compare runs: {tracking.ui_command(uri)}", soft_wrap=True)


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> float | list[float] | None:
    """What a sweeper optimises: ``optimized_metric`` if set, or a list of them
    (multi-objective); ``time/fit_s`` is the seconds the run took to train and test."""
    values = [metrics.get(key, math.nan) for key in optuna.objective_keys(cfg)]
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
                sweep_job.join_sweep(cfg, run_id, str(tracking.sweep_id()))
                sweep_job.record_job("skipped", run_id)
                print(f"sweeplab-train: skipping job {HydraConfig.get().job.num}: identical config finished as run {run_id}")
                return _objective(cfg, metrics)
        metrics = run(cfg)
        if multirun:
            sweep_job.record_job("trained")
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
        sweep_job.record_job("failed", error=one_line(exc))
        return -math.inf if cfg.get("optimized_mode", "max") == "max" else math.inf
    finally:
        collector_back_on()  # a job that was skipped or failed before training ends start-up too


def main() -> None:
    """Console script ``sweeplab-train``."""
    from sweeplab.errors import run_cli

    pause_collector_for_start_up()  # Hydra's composition and a sweep's set-up are start-up too
    register_experiments()
    # Ctrl-C and SIGTERM (a scheduler, `kill`) stop a run the same way: checkpoint
    # kept, MLflow run KILLED with the signal named, exit 128 + signal number.
    signals.take_over()

    def entry() -> None:
        try:
            _hydra_entry()
        except KeyboardInterrupt:
            sweep_job.close_interrupted()  # runs an interrupted sweep's workers left RUNNING, and the sweep's own
            raise
        except BaseException:
            sweep_job.close_sweep_run("FAILED")  # a launcher or sweeper that raised: the sweep's own run ends too
            raise
        if _failure:
            raise _failure.pop()

    run_cli(entry, "sweeplab-train")


if __name__ == "__main__":
    main()

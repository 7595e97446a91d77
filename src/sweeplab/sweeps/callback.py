"""What a multirun did, said by the process that started it.

Every job of a sweep leaves ``sweeplab_job.json`` in its folder (trained,
skipped as identical to a finished run, or failed, with the error), whatever
launcher ran it: in-process, joblib workers, or submitit jobs whose output
only reaches their log files. The parent's Hydra callback prepares the
MLflow store before the jobs start and, when they are done, reads those
records and prints one summary.

A job skipped by ``skip_finished`` still belongs to its sweep: the new sweep
id is added to the reused run's ``sweeplab.sweeps`` tag, which
``sweeplab compare --sweep`` reads, so a sweep lists every one of its jobs.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sweeplab import redact
from sweeplab.record import tags, tracking
from sweeplab.sweeps import fused
from sweeplab.sweeps import parent as sweep_run

RECORD = "sweeplab_job.json"


def record_job(status: str, run_id: str | None = None, error: str | None = None) -> None:
    """Write this job's outcome into its own folder (called inside a multirun job)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    overrides = [redact.mask_override(o) for o in hc.overrides.task]
    record = {"num": hc.job.num, "overrides": overrides, "status": status, "run_id": run_id, "error": error, **fused.job_record()}
    torch = sys.modules.get("torch")
    if torch is not None and status == "trained":
        # How many threads this job's torch used: a parallel launcher's workers share the cores
        # (joblib's and the fused launcher's workers get cores / n_jobs through OMP_NUM_THREADS unless the user set it).
        record["torch_threads"] = torch.get_num_threads()
        launcher = str(hc.launcher.get("_target_", ""))
        workers = hc.launcher.get("n_jobs") if "joblib" in launcher else 1
        if "fused" in launcher:  # in one of the launcher's worker processes, or in the launcher's own
            workers = os.environ.get(fused.WORKERS_ENV) or 1
        record["workers"] = int(workers)
    folder = Path(hc.runtime.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD).write_text(json.dumps(record))


def join_sweep(cfg: DictConfig, run_id: str, sweep: str) -> None:
    """Add ``sweep`` to the sweeps a (reused) run belongs to."""
    from mlflow.tracking import MlflowClient

    from sweeplab.sweeps.optuna import job_tags

    client = MlflowClient(tracking.tracking_uri(cfg))
    have = client.get_run(run_id).data.tags
    members = (have.get(tags.SWEEPS) or have.get(tags.SWEEP_ID) or "").split()
    if sweep not in members:
        client.set_tag(run_id, tags.SWEEPS, " ".join([*members, sweep]))
    trial = job_tags().get(tags.TRIAL)  # an optuna trial that asked for a config already trained: its number joins the run's
    if trial and trial not in (numbers := (have.get(tags.TRIAL) or "").split()):
        client.set_tag(run_id, tags.TRIAL, " ".join([*numbers, trial]))


def summarize(sweep_dir: Path, never_started: dict[int, str] | None = None) -> str | None:
    """One paragraph on a finished sweep from its jobs' records and the jobs a
    cluster cancelled before they started (number -> overrides); None outside a sweep folder."""
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name) if sweep_dir.is_dir() else []
    never_started = never_started or {}
    if not jobs and not never_started:
        return None
    records, silent = [], []
    for job in jobs:
        try:
            records.append(json.loads((job / RECORD).read_text()))
        except (OSError, ValueError):
            silent.append(job.name)
    by_status = {s: [r for r in records if r["status"] == s] for s in ("trained", "skipped", "failed")}
    sweep = tracking.sweep_id_of(sweep_dir)
    counts = ", ".join(f"{len(v)} {k}" for k, v in by_status.items())
    lines = [
        f"sweeplab-train: sweep {sweep}: {len(jobs) + len(never_started)} jobs: {counts}"
        + (f", {len(silent)} left no record" if silent else "")
        + (f", {len(never_started)} never started" if never_started else "")
    ]
    threads = {(r["torch_threads"], r["workers"]) for r in by_status["trained"] if "torch_threads" in r}
    if len(threads) == 1:
        (count, workers), cores = threads.pop(), os.cpu_count()
        parallel = f" ({cores} cores, {workers} worker processes; OMP_NUM_THREADS sets it)" if workers != 1 else ""
        lines[0] += f"; {count} torch thread{'s' if count != 1 else ''} a job{parallel}"
    groups: dict[str, dict[int, list[int]]] = {}  # group -> its rounds (0: all at once) -> job numbers
    for r in records:
        if r.get("fused_group"):
            groups.setdefault(r["fused_group"], {}).setdefault(r.get("round", 0), []).append(r["num"])
    for group, rounds in groups.items():  # hydra/launcher=fused: which jobs trained together
        jobs = " | ".join(", ".join(map(str, sorted(nums))) for _, nums in sorted(rounds.items()))
        how = f" in {len(rounds)} rounds to fit the memory" if set(rounds) != {0} else ""
        lines.append(f"  fused group {group.rsplit('/', 1)[-1]}: jobs {jobs} trained together{how}")
    for r in records:
        if r.get("alone"):
            lines.append(f"  job {r['num']} trained alone: {r['alone']}")
    for r in by_status["skipped"]:
        lines.append(f"  job {r['num']} skipped, identical config already FINISHED as run {r['run_id']}: {' '.join(r['overrides'])}")
    for r in by_status["failed"]:
        lines.append(f"  job {r['num']} failed: {r['error']}")
    for num, overrides in sorted(never_started.items()):
        lines.append(f"  job {num} never started (cancelled, see above): {overrides}")
    if silent:
        lines.append(f"  no record from job folders {', '.join(silent)} (killed before the end?)")
    if by_status["skipped"]:
        lines.append("  skipped jobs count as members of this sweep; add skip_finished=false to train them again")
    return "\n".join(lines)


def sweep_page(metric: str | None, scores: list[str], swept: list[str]) -> str | None:
    """A view of this sweep in the MLflow UI, and how to get there: its runs, best first by
    ``metric``, with the ``scores`` and the ``swept`` keys as columns. MLflow keeps no column
    choice in a URL, but it opens a saved view (an experiment tag) by its key."""
    if not _started:
        return None
    from mlflow.tracking import MlflowClient

    uri, sweep, experiment_id = _started["uri"], _started["sweep"], _started["experiment_id"]
    try:
        key = tracking.save_runs_view(MlflowClient(uri), experiment_id, f"sweep {sweep}", sweep, metric, scores, swept)
    except Exception:  # noqa: BLE001 - the page is a courtesy: the summary above is what counts
        return None
    return f"see the sweep: {tracking.see_in_ui(uri, tracking.runs_page(uri, experiment_id, view=key))}"


PARENT_ENV = "SWEEPLAB_SWEEP_PARENT"  # pid of the process that started the sweep, seen by its workers
_started: dict[str, str] = {}  # in the sweep's parent: where its runs are tracked


def close_sweep_run(status: str) -> None:
    """End the sweep's own run, if one is open (a sweep that did not reach its end)."""
    if _started and (run_id := _started.pop("parent", None)):
        sweep_run.close_run(_started["uri"], run_id, status)


def close_interrupted(wait: float = 15.0) -> int:
    """In the parent of an interrupted sweep: once its workers are gone, mark
    KILLED the sweep's runs they left RUNNING; return how many."""
    if not _started:
        return 0
    close_sweep_run("KILLED")  # the sweep's own run, with its jobs
    return close_left_running("the sweep was interrupted", wait)


def close_left_running(why: str, wait: float = 15.0) -> int:
    """In a sweep's parent: mark KILLED, tagged ``why``, the sweep's runs left RUNNING by
    processes that are gone (waiting up to ``wait`` s for live ones to close their own); return how many."""
    if not _started:
        return 0
    from mlflow.tracking import MlflowClient

    from sweeplab.record import liveness

    client = MlflowClient(_started["uri"])
    experiment = client.get_experiment_by_name(_started["experiment"])
    if experiment is None:
        return 0
    query = f"tags.`sweeplab.sweep_id` = '{_started['sweep']}' and attributes.status = 'RUNNING'"
    deadline = time.time() + wait
    while True:  # a worker still alive may be closing its own run
        runs = client.search_runs([experiment.experiment_id], filter_string=query)
        if all(liveness.process_gone(r.data.tags) is not False for r in runs) or time.time() > deadline:
            break
        time.sleep(0.5)
    return len(liveness.close_stale(client, runs, why=why))


_watching = False
_run_closed = threading.Event()  # set when the worker's current run has been closed
_orphaned = threading.Event()  # set when the sweep's process is gone
_closing = threading.Lock()  # the two events above change together


def run_closed() -> None:
    """The worker's current run is closed; if the sweep's process is gone, its run is closed next:
    after this worker's own, never while it writes (SQLite would keep one of them waiting)."""
    with _closing:
        if _orphaned.is_set():
            _close_orphaned()
        _run_closed.set()


def _close_orphaned() -> None:
    try:
        sweep_run.close_orphaned()
    except Exception:  # noqa: BLE001 - nobody is left to tell
        pass


def watch_sweep_parent() -> None:
    """In a worker process of a sweep (joblib): if the sweep's parent dies (SIGKILL),
    stop like on SIGTERM (run KILLED, checkpoint kept), close the sweep's run KILLED
    and exit, instead of training on with nobody to report to."""
    global _watching
    _run_closed.clear()
    parent = os.environ.get(PARENT_ENV, "")
    if _watching or not parent.isdigit() or os.getpid() == int(parent) or os.getppid() != int(parent):
        return  # not a direct worker of a sweep's parent (a SLURM job's parent is slurmstepd)
    _watching = True

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        with _closing:
            _orphaned.set()
            idle = _run_closed.is_set()  # between two jobs: no run of this worker's is open
        if idle:
            _close_orphaned()
        else:
            os.kill(os.getpid(), signal.SIGTERM)
            _run_closed.wait(timeout=60.0)  # the run closes itself as KILLED, then the sweep's; then leave, even if it could not
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="sweeplab-parent-watch", daemon=True).start()


SWEPT_ENV = "SWEEPLAB_SWEPT"


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: sweep overrides on the command line (a,b / range() / ...)
    and the sweeper's own search space (hydra.sweeper.params), read with Hydra's grammar."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys = {str(k).lstrip("+~") for k in (OmegaConf.select(config, "hydra.sweeper.params") or {})}
    for override in parser.parse_overrides(list(config.hydra.overrides.task)):
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return sorted(keys)


def swept() -> str | None:
    """The sweep's varied keys, in a job of a sweep (see SweepCallback)."""
    return os.environ.get(SWEPT_ENV) or None


class SweepCallback(Callback):
    """Hydra callback of the process that starts a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Parallel jobs opening a new SQLite store at once race in MLflow's schema set-up.
        if tracking.uses_mlflow(config):
            experiment_id = tracking.ensure_experiment(config)
            _started.update(
                uri=tracking.tracking_uri(config),
                experiment=str(config.experiment_name),
                experiment_id=experiment_id,
                sweep=tracking.sweep_id_of(config.hydra.sweep.dir),
            )
            command = shlex.join(["sweeplab-train", *(redact.mask_override(o) for o in config.hydra.overrides.task)])
            _started["parent"] = sweep_run.open_run(_started["uri"], experiment_id, _started["sweep"], command, swept_keys(config))
        from sweeplab.sweeps import slurm

        slurm.prepare_parent(config.hydra.launcher)
        os.environ[PARENT_ENV] = str(os.getpid())
        os.environ[SWEPT_ENV] = ",".join(swept_keys(config))  # inherited by the jobs, joblib's workers too
        if not str(config.hydra.launcher.get("_target_", "")).endswith("BasicLauncher"):
            from sweeplab.start_up import collector_back_on

            collector_back_on()  # this process only waits on its jobs: its start-up is over

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sweeplab.start_up import heap_frozen

        with heap_frozen():  # its summary's collections need not scan what the sweep left
            self._end(config)

    def _end(self, config: DictConfig) -> None:
        os.environ.pop(SWEPT_ENV, None)
        from sweeplab.sweeps import slurm

        sweep_dir = Path(config.hydra.sweep.dir)
        summary = summarize(sweep_dir, slurm.never_started)
        slurm.never_started.clear()  # this sweep's
        run_id = _started.pop("parent", None)
        ranked: tuple[str | None, list[str]] = (None, [])
        if run_id:
            try:
                ranked = sweep_run.summarize_run(
                    _started["uri"],
                    _started["experiment"],
                    _started["experiment_id"],
                    run_id,
                    _started["sweep"],
                    sweep_dir,
                    summary or f"sweeplab-train: sweep {_started['sweep']}: no job ran",
                    config.get("optimized_metric"),
                )
            except Exception as exc:  # noqa: BLE001 - the jobs' runs are complete; the summary is printed below
                from sweeplab.errors import one_line

                print(f"sweeplab-train: the sweep's summary did not reach its MLflow run {run_id}: {one_line(exc)}", file=sys.stderr)
            finally:
                sweep_run.close_run(_started["uri"], run_id, "FINISHED")
        if summary:
            page = sweep_page(*ranked, swept_keys(config))
            print(summary + (f"\n{page}" if page else ""), flush=True)

"""Optuna searches for ``hydra/sweeper=optuna`` (the plugin in
``hydra_plugins.sweeplab_optuna``), on optuna 5.

The sweeper side asks the study for trials, ``n_jobs`` at a time, hands each
trial's overrides to Hydra's launcher (basic, joblib, submitit) and tells the
study what each job returned. The study lives in an RDB storage (a SQLite file
in the sweep folder unless ``hydra.sweeper.storage`` names a shared one), so:

- re-running the command with the same storage and ``study_name`` resumes the
  study: finished trials are kept; trials that were running when a sweep died
  are marked failed and asked again (the sweeper's heartbeat stops when it
  dies; on its own machine a dead process is seen at once);
- several sweeps on several machines work one study at once: each asks only
  for the trials still missing from ``n_trials``, counted over the whole study;
- a job reports its monitored metric to its trial after each validation
  (``OptunaPruning``) and stops when the study's pruner says so.

The job side reads which trial it is from two environment variables the
sweeper sets through ``hydra.job.env_set`` (not config keys: a trial's config,
hash and parameters are those of the same run trained by hand).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import shlex
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sweeplab.record import tags

TRIAL_ENV, TRIAL_ID_ENV = "SWEEPLAB_OPTUNA_TRIAL", "SWEEPLAB_OPTUNA_TRIAL_ID"
SAMPLERS = ("tpe", "random", "cmaes", "nsga2", "grid")
PRUNERS = ("none", "median", "hyperband")
DIRECTIONS = ("maximize", "minimize")
MAX_RETRY = 3  # an interrupted trial is asked again at most this often
ORPHAN_AFTER_S = 60.0  # a running trial with no owner this old was asked by a sweeper that died before handing it out
OWNER, OVERRIDES, SURPLUS = "sweeplab.owner", "sweeplab.overrides", "sweeplab.surplus"  # trial user attributes


# ---------------------------------------------------------------- search space


def search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """({override key: optuna distribution}, fixed overrides) from the sweeper's
    ``params`` and the command line (which wins), in Hydra's sweep grammar:
    ``choice(a, b)``, ``range(1, 10, 2)`` (stop excluded, as in Python),
    ``interval(0.1, 1.0)``, ``tag(log, interval(1e-4, 1e-1))``; ``a,b`` is a choice."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    chosen: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        chosen[override.get_key_element()] = override  # a later one (the command line) wins
    space, fixed = {}, []
    for key, override in chosen.items():
        if override.is_sweep_override():
            space[key] = _distribution(key, override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def _distribution(key: str, override: Any) -> Any:
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{key}={override.input_line.split('=', 1)[1]}: an empty range")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step)) if value.step > 0 else CategoricalDistribution(values)
        return FloatDistribution(min(values), max(values), step=abs(float(value.step)))
    if override.is_interval_sweep():
        log = "log" in value.tags
        shown = f"{key}={override.input_line.split('=', 1)[1]}"
        if not float(value.start) < float(value.end):
            raise ValueError(f"{shown}: the lower bound ({value.start}) must be below the upper one ({value.end})")
        if log and float(value.start) <= 0:
            raise ValueError(f"{shown}: a log-scale interval needs bounds > 0 (the lower one is {value.start})")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line}: the optuna sweeper takes choice(), range(), interval() or tag(log, interval())")


def grid_of(space: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The grid sampler's values: choices and stepped ranges; an interval has no grid."""
    from optuna.distributions import CategoricalDistribution

    grid = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None) and not getattr(dist, "log", False):
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[key] = [type(dist.low)(dist.low + i * dist.step) for i in range(count)]
        else:
            raise ValueError(
                f"hydra.sweeper.sampler=grid: {key} is a continuous interval; give it as choice(...) or range(start, stop, step)"
            )
    return grid


# ---------------------------------------------------------------- study


def build_sampler(sampler: Any, seed: int | None, space: Mapping[str, Any]) -> Any:
    """A sampler by name (tpe, random, cmaes, nsga2, grid), or an object config with _target_ (the old plugin's form)."""
    import optuna

    if isinstance(sampler, Mapping):
        import hydra

        return hydra.utils.instantiate(dict(sampler))
    name = str(sampler).lower()
    if name == "grid":
        return optuna.samplers.GridSampler(grid_of(space), seed=seed)
    builders = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "nsga2": optuna.samplers.NSGAIISampler,
    }
    if name not in builders:
        raise ValueError(f"hydra.sweeper.sampler={sampler}: not a sampler; choose one of {', '.join(SAMPLERS)}")
    return builders[name](seed=seed)


def build_pruner(options: Mapping[str, Any]) -> Any:
    """The sweeper's pruner from its options (pruner, n_startup_trials, n_warmup_steps, min_resource, reduction_factor)."""
    import optuna

    pruner = options.get("pruner") or "none"
    name = str(pruner).lower()
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(options.get("n_startup_trials", 2)), n_warmup_steps=int(options.get("n_warmup_steps", 1))
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(options.get("min_resource", 1)), reduction_factor=int(options.get("reduction_factor", 3))
        )
    raise ValueError(f"hydra.sweeper.pruner={pruner}: not a pruner; choose one of {', '.join(PRUNERS)}")


def directions_of(direction: Any, directions: Any) -> list[str]:
    chosen = list(directions) if directions else [direction] if isinstance(direction, str) else list(direction or [])
    for d in chosen:
        if str(d).lower() not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={d}: choose {' or '.join(DIRECTIONS)}")
    if not chosen:
        raise ValueError("hydra.sweeper.direction: give maximize or minimize (or directions: [maximize, minimize])")
    return [str(d).lower() for d in chosen]


def default_storage(sweep_dir: str | Path) -> str:
    """The study of a sweep that names no storage: a SQLite file in its folder (optuna-dashboard reads it)."""
    return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


def quiet_optuna() -> None:
    """Heartbeats, stale-trial retries and ask/tell with a heartbeat are what this
    module is built on; optuna flags them as experimental on every use."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # sweeplab says what each trial did


STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")  # SQLAlchemy's, for optuna's RDBStorage


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> Any:
    """An RDB storage; with a heartbeat, trials of a sweeper that stopped beating are failed and asked again."""
    import optuna

    quiet_optuna()
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None  # concurrent sweeps wait, not fail
    beat = {}
    if heartbeat_interval:
        beat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period or 3 * heartbeat_interval,
            "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        }
    # Sweeps started together on a new storage race to create its tables: a lock file
    # beside a SQLite study makes them take turns; a server database is tried again.
    for attempt in range(3):
        try:
            with _sqlite_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine, **beat)
        except Exception as exc:
            if url.startswith("sqlite") or attempt == 2 or "sqlalchemy" not in type(exc).__module__:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _sqlite_lock(url: str) -> Iterator[None]:
    if not url.startswith("sqlite:///"):
        yield
        return
    import fcntl

    path = Path(url[len("sqlite:///") :])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _counted(trials: Sequence[Any]) -> list[Any]:
    """The trials that count toward n_trials: all asked ones but those failed by an
    interruption and asked again, and those a concurrent sweep asked beyond the total."""
    from optuna.trial import TrialState

    retried = {number for t in trials for number in t.system_attrs.get("retry_history", [])}
    return [
        t
        for t in trials
        if t.state != TrialState.WAITING and not t.user_attrs.get(SURPLUS) and not (t.state == TrialState.FAIL and t.number in retried)
    ]


def fail_and_retry(study: Any, trial_id: int) -> bool:
    """Mark a running trial failed and queue its parameters again; False if another process got there first."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage
    try:
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, storage.get_trial(trial_id))
    return True


def recover(study: Any) -> int:
    """Trials left running by sweeps that died: those whose heartbeat stopped, and
    those of a process on this machine that is gone. Returns how many were failed and re-queued."""
    import optuna
    from optuna.trial import TrialState

    from sweeplab.record.liveness import process_gone

    count = 0
    if _heartbeat_interval(study):  # fail_stale_trials says nothing of what it did: count the running trials it ended
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        optuna.storages.fail_stale_trials(study)
        count = running - len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if OWNER not in trial.user_attrs:
            # Asked, then the sweeper died before it wrote the owner (it does so at once): no job ever had
            # this trial, no heartbeat will end it, and it would count toward n_trials forever. Set aside.
            started = trial.datetime_start or now
            if (now - started).total_seconds() > ORPHAN_AFTER_S:
                count += _set_aside(study, trial._trial_id)
        elif process_gone(dict(trial.user_attrs.get(OWNER) or {})) is True:  # on this machine, its sweeper is gone
            count += fail_and_retry(study, trial._trial_id)
    return count


def _set_aside(study: Any, trial_id: int) -> bool:
    """Fail a trial and keep it out of the count (tag sweeplab.surplus); False if another process ended it first."""
    import optuna
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial_id, SURPLUS, True)
        return bool(study._storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False


def _rdb(study: Any) -> Any:
    return getattr(study._storage, "_backend", study._storage)  # under optuna's cache, if any


def _heartbeat_interval(study: Any) -> int | None:
    return getattr(_rdb(study), "get_heartbeat_interval", lambda: None)()


class Heartbeat:
    """Records the heartbeat of the trials a sweeper is running, while they run."""

    def __init__(self, study: Any) -> None:
        self.storage, self.interval = _rdb(study), _heartbeat_interval(study)
        self.trial_ids: list[int] = []
        self._stop = threading.Event()

    def __enter__(self) -> Heartbeat:
        if self.interval:
            threading.Thread(target=self._beat, name="sweeplab-optuna-heartbeat", daemon=True).start()
        return self

    def track(self, trial_ids: list[int]) -> None:
        """Beat for these trials from now on (the first beat at once: a trial never beaten is never found stale)."""
        self.trial_ids = list(trial_ids)
        for trial_id in self.trial_ids if self.interval else []:
            self.storage.record_heartbeat(trial_id)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.trial_ids):
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # noqa: BLE001 - a finished trial, a store hiccup: the next beat tries again
                    pass

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()


def outcome(study: Any, trial_id: int, returned: Any, failed: bool, n_objectives: int) -> tuple[Any, list[float] | None]:
    """(TrialState, values) for a job: PRUNED if its pruning callback stopped it,
    FAIL if it raised or returned no finite value for each objective, else COMPLETE."""
    from optuna.trial import TrialState

    if study._storage.get_trial(trial_id).user_attrs.get(tags.PRUNED_EPOCH) is not None:
        return TrialState.PRUNED, None
    values = list(returned) if isinstance(returned, (list, tuple)) else [returned]
    if failed or len(values) != n_objectives or any(v is None or not math.isfinite(float(v)) for v in values):
        return TrialState.FAIL, None
    return TrialState.COMPLETE, [float(v) for v in values]


def trial_overrides(fixed: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    return [*fixed, *(f"{key}={value}" for key, value in params.items())]


def summary(study: Any, storage: str, metrics: Sequence[str], sweep_dir: str | Path) -> str:
    """The study in a few lines: trials by state, the best trial (or the Pareto front) and the command that trains it again."""
    from optuna.trial import TrialState

    from sweeplab.record.tags import reproduce_command
    from sweeplab.record.tracking import redact_uri, sweep_id_of

    trials = _counted(study.get_trials(deepcopy=False))
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL, "running": TrialState.RUNNING}
    counts = {name: sum(t.state == state for t in trials) for name, state in states.items()}
    lines = [
        f"sweeplab-train: study {study.study_name} ({redact_uri(storage)}): {len(trials)} trials: "
        + ", ".join(f"{n} {name}" for name, n in counts.items() if n or name != "running")
    ]
    best = study.best_trials if counts["complete"] else []  # one objective: the best value (ties included)
    for trial in best[:5]:
        scores = ", ".join(f"{m} {v:.4g}" for m, v in zip(metrics, trial.values))
        command = reproduce_command(
            {"tags.sweeplab.overrides": shlex.join(trial.user_attrs.get(OVERRIDES, [])), "tags.sweeplab.sweep_id": sweep_id_of(sweep_dir)}
        )
        lines.append(f"  best trial {trial.number}: {scores}\n    {command}")
    if len(best) > 5:
        lines.append(f"  ... {len(best) - 5} more on the Pareto front (optimization_results.yaml)")
    if not best:
        lines.append("  no trial completed")
    return "\n".join(lines)


def results(study: Any, metrics: Sequence[str]) -> dict[str, Any]:
    """optimization_results.yaml: the best trial's parameters and value (one objective), or the Pareto front."""
    from optuna.trial import TrialState

    done = any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    if len(metrics) == 1:
        best = study.best_trial if done else None
        return {
            "name": "optuna",
            "study_name": study.study_name,
            "metric": metrics[0],
            "best_trial": best.number if best else None,
            "best_params": dict(best.params) if best else {},
            "best_value": best.value if best else None,
        }
    front = study.best_trials if done else []
    return {
        "name": "optuna",
        "study_name": study.study_name,
        "metrics": list(metrics),
        "solutions": [{"trial": t.number, "params": dict(t.params), "values": list(t.values)} for t in front],
    }


# ---------------------------------------------------------------- the job's side


def objective_keys(cfg: Any) -> list[str]:
    """``optimized_metric`` as a list: one key, several (multi-objective), or none."""
    keys = cfg.get("optimized_metric")
    return [str(keys)] if isinstance(keys, str) else [str(k) for k in keys or []]


def trial_in_job() -> tuple[int, int] | None:
    """(trial number, trial id) when this job is a trial of an optuna sweep."""
    number, trial_id = os.environ.get(TRIAL_ENV, ""), os.environ.get(TRIAL_ID_ENV, "")
    return (int(number), int(trial_id)) if number.isdigit() and trial_id.isdigit() else None


def _sweeper_config() -> Any:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().sweeper
    except ValueError:
        return None


def job_tags() -> dict[str, str]:
    """MLflow tags of a trial's run: its study and trial number."""
    found, sweeper = trial_in_job(), _sweeper_config()
    if found is None or sweeper is None:
        return {}
    return {tags.STUDY: str(sweeper.study_name), tags.TRIAL: str(found[0])}


def pruning_callback(monitor: str) -> Any:
    """The Lightning callback that reports ``monitor`` to this job's trial, or None
    when the job is no trial or its sweeper prunes nothing."""
    found, sweeper = trial_in_job(), _sweeper_config()
    if found is None or sweeper is None or str(sweeper.get("pruner", "none")).lower() == "none":
        return None
    import optuna

    from sweeplab.sweeps.pruning import OptunaPruning

    study = optuna.load_study(
        study_name=str(sweeper.study_name),
        storage=open_storage(str(sweeper.storage)),
        pruner=build_pruner(sweeper),
    )
    return OptunaPruning(optuna.trial.Trial(study, found[1]), monitor)


# ---------------------------------------------------------------- the sweeper's loop


def run_study(sweeper: Any, arguments: Sequence[str], sweep_dir: Path) -> None:
    """Ask, launch, tell until the study holds ``n_trials`` counted trials; then print the best."""
    import optuna
    from omegaconf import OmegaConf

    options, config = sweeper.options, sweeper.config
    metrics = objective_keys(config)
    if not metrics:
        raise ValueError("hydra/sweeper=optuna: set optimized_metric (e.g. optimized_metric=val/f1), the value each trial returns")
    directions = directions_of(options.get("direction"), options.get("directions"))
    if len(directions) != len(metrics):
        raise ValueError(f"hydra.sweeper.directions={directions}: one direction per optimized_metric {metrics}")
    pruner = str(options.get("pruner") or "none")
    if pruner != "none" and len(metrics) > 1:
        raise ValueError(f"hydra.sweeper.pruner={pruner}: optuna prunes single-objective studies only; use pruner=none with {metrics}")
    if pruner != "none" and not metrics[0].startswith(("val/", "train/")):
        raise ValueError(f"hydra.sweeper.pruner={pruner}: optimized_metric={metrics[0]} is not known each epoch; prune on a val/ metric")
    n_trials = options.get("n_trials")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"hydra.sweeper.n_trials={n_trials!r}: must be a positive integer, the number of trials the study holds when done")
    n_jobs = max(int(options.get("n_jobs") or 1), 1)
    space, fixed = search_space(options.get("params"), arguments)
    if str(options.get("sampler")).lower() == "grid":
        size = math.prod(len(values) for values in grid_of(space).values())
        if n_trials > size:
            print(f"sweeplab-train: sampler=grid: the grid has {size} points; n_trials={n_trials} becomes {size}")
            n_trials = size
    storage_url = str(options.get("storage") or default_storage(sweep_dir))
    if storage_url.split(":", 1)[0].split("+", 1)[0] not in STORAGE_SCHEMES:
        from sweeplab.record.tracking import redact_uri

        raise ValueError(
            f"hydra.sweeper.storage={redact_uri(storage_url)}: not a database optuna can keep a study in; "
            "use sqlite:///path/optuna.db, postgresql://user@host/db or mysql://user@host/db (or null: the sweep folder's optuna.db)"
        )
    study = optuna.create_study(
        study_name=str(options.get("study_name") or config.experiment_name),
        storage=open_storage(storage_url, options.get("heartbeat_interval"), options.get("grace_period")),
        pruner=build_pruner(options),
        directions=directions,
        load_if_exists=True,
    )
    study.sampler = build_sampler(options.get("sampler") or "tpe", _seed(study, options.get("seed")), space)
    if [d.name.lower() for d in study.directions] != directions:
        raise ValueError(
            f"study {study.study_name} in {storage_url} was created to {[d.name.lower() for d in study.directions]}, "
            f"not {directions}: give another study_name"
        )
    recovered = recover(study)
    done = len(_counted(study.get_trials(deepcopy=False)))
    print(
        f"sweeplab-train: optuna study {study.study_name}: {done} of {n_trials} trials already there"
        + (f", {recovered} interrupted trial(s) failed (asked again where a job had them)" if recovered else "")
        + f"; {len(space)} searched key(s): {', '.join(space)}",
        flush=True,
    )
    # Jobs find the study where the sweeper put it, even a default one in the sweep folder.
    hydra_overrides = [] if options.get("storage") else [f"hydra.sweeper.storage='{storage_url}'"]
    job_idx = 0
    with Heartbeat(study) as heartbeat:
        while True:
            recover(study)
            batch = _ask(study, n_trials, n_jobs, space, fixed)
            if not batch:
                break
            heartbeat.track([t._trial_id for t in batch])
            jobs = [
                [
                    *t.user_attrs[OVERRIDES],
                    *hydra_overrides,
                    f"+hydra.job.env_set.{TRIAL_ENV}={t.number}",
                    f"+hydra.job.env_set.{TRIAL_ID_ENV}={t._trial_id}",
                ]
                for t in batch
            ]
            try:
                sweeper.validate_batch_is_legal(jobs)
                returns = sweeper.launcher.launch(jobs, initial_job_idx=job_idx)
            except BaseException:  # Ctrl-C, a launcher that failed: these trials are asked again next time
                for trial in batch:
                    fail_and_retry(study, trial._trial_id)
                raise
            job_idx += len(batch)
            for trial, ret in zip(batch, returns):
                failed = ret.status.name == "FAILED"
                state, values = outcome(study, trial._trial_id, None if failed else ret.return_value, failed, len(metrics))
                _tell(study, trial, values, state)
            heartbeat.track([])
    OmegaConf.save(OmegaConf.create(results(study, metrics)), sweep_dir / "optimization_results.yaml")
    print(summary(study, storage_url, metrics, sweep_dir), flush=True)


def _seed(study: Any, seed: Any) -> int | None:
    """The sampler's seed: ``seed`` for a new study; offset by the trials already there when
    a sweep resumes one (the same seed would draw the first trials' values again), and by
    this process when another sweep is working the study now (it drew from the same seed)."""
    from optuna.trial import TrialState

    if seed is None:
        return None
    trials = study.get_trials(deepcopy=False)
    busy = any(t.state == TrialState.RUNNING for t in trials)
    return (int(seed) + len(trials) + (os.getpid() if busy else 0)) % 2**32 if trials else int(seed)


def _tell(study: Any, trial: Any, values: list[float] | None, state: Any) -> None:
    try:
        study.tell(trial, values=values, state=state, skip_if_finished=True)
    except RuntimeError as exc:  # the grid sampler stops the study once its grid is done: the trial is told all the same
        if "Study.stop" not in str(exc):
            raise


def _in_flight_already(study: Any, trial: Any, wait_s: float = 2.0) -> bool:
    """Whether an earlier trial still running has these exact values: two sweeps that started at the
    same moment with the same seed draw the same values, and neither saw the other's trial when it
    counted (a server database has no lock file to space their starts). The later trial yields;
    an earlier one still being sampled (no values yet) is waited for, briefly."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + wait_s
    while True:
        earlier = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number < trial.number and not t.user_attrs.get(SURPLUS)
        ]
        if all(t.params for t in earlier) or time.monotonic() > deadline:
            return any(t.params == trial.params for t in earlier)
        time.sleep(0.1)


def _ask(study: Any, n_trials: int, n_jobs: int, space: Mapping[str, Any], fixed: Sequence[str]) -> list[Any]:
    """Up to ``n_jobs`` new trials, never beyond ``n_trials`` counted over the whole study:
    a trial a concurrent sweep asked at the same moment beyond the total is set aside (tag sweeplab.surplus)."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from sweeplab.record.liveness import process_tags

    counted = _counted(study.get_trials(deepcopy=False))
    seen = {tuple(sorted(t.params.items())) for t in counted}
    continuous = any(not isinstance(d, CategoricalDistribution) for d in space.values())
    batch: list[Any] = []
    for _ in range(max(min(n_jobs, n_trials - len(counted)), 0)):
        for attempt in range(3):
            trial = study.ask(dict(space))
            if "failed_trial" in study._storage.get_trial(trial._trial_id).system_attrs:  # a retry repeats on purpose
                break
            repeated = (continuous and tuple(sorted(trial.params.items())) in seen) or _in_flight_already(study, trial)
            # The last draw is kept even when it repeats: a small categorical space (choice(adam, sgd) with
            # n_jobs=2) can draw an in-flight value three times running, and a set-aside trial is finished.
            if not repeated or attempt == 2:
                break
            # The exact values of an earlier trial in a continuous space: a sweep that started with the same seed at the same time.
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            study.sampler.reseed_rng()
        trial.set_user_attr(OWNER, process_tags())
        trial.set_user_attr(OVERRIDES, trial_overrides(fixed, trial.params))
        seen.add(tuple(sorted(trial.params.items())))
        batch.append(trial)
    if batch:
        counted = sorted(t.number for t in _counted(study.get_trials(deepcopy=False)))
        allowed = set(counted[:n_trials])
        for trial in [t for t in batch if t.number not in allowed]:
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            batch.remove(trial)
    return batch

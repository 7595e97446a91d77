"""MLflow store location, finding a config's runs, params, tags and the run description.

mlflow is imported only inside the functions that need it (about 2 s).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeplab.config import check_scheme, choices, overrides
from sweeplab.record import identity
from sweeplab.redact import mask_secrets, redact_uri

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


# Keys of conf/logger that sweeplab reads itself; the rest go to the logger's class.
SWEEPLAB_LOGGER_KEYS = ("also", "system_metrics", "system_metrics_every", "log_model", "log_checkpoints")


def system_metrics(cfg: DictConfig, run_id: str | None) -> Any:
    """MLflow's system metrics monitor for this run when ``logger.system_metrics=true``
    (a thread sampling every ``system_metrics_every`` seconds; ``finish()`` stops it)."""
    if not run_id or not cfg.logger.get("system_metrics"):
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    every = float(cfg.logger.get("system_metrics_every", 10))  # checked > 0 by check_config
    monitor = SystemMetricsMonitor(run_id, sampling_interval=every, tracking_uri=tracking_uri(cfg))
    monitor.start()
    return monitor


def uses_mlflow(cfg: DictConfig) -> bool:
    return str(cfg.get("logger", {}).get("_target_", "")).endswith("MLFlowLogger")


def tracking_uri(cfg: DictConfig) -> str:
    """logger.tracking_uri, else $MLFLOW_TRACKING_URI, else <paths.outputs>/mlflow.db (SQLite)."""
    uri = cfg.get("logger", {}).get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return str(uri)
    return "sqlite:///" + str((Path(cfg.paths.outputs) / "mlflow.db").resolve())


def default_tracking_uri(outputs: str = "outputs") -> str:
    """What a run launched here with no overrides would use."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + str((Path(outputs) / "mlflow.db").resolve())


def existing_store(store: str, flag: str = "--store") -> str:
    """The tracking URI of a store a command reads (compare, eval): a path to an
    SQLite file is accepted as it is; a store that does not exist or is no
    database is refused in one line instead of being created empty."""
    import sqlite3

    if "://" not in store and not store.startswith(("file:", "databricks")):
        store = "sqlite:///" + str(Path(store).expanduser().resolve())
    check_scheme(store, f"{flag} ")
    if store.startswith(("http://", "https://")):
        check_server(store, key=f"{flag} ")
    if not store.startswith("sqlite:///"):
        return store
    db = Path(store.removeprefix("sqlite:///"))
    if not db.is_file():
        raise ValueError(
            f"{flag} {redact_uri(store)}: no such MLflow store (no file {db}); runs launched here are in {default_tracking_uri()}"
        )
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{flag} {redact_uri(store)}: not an MLflow store ({exc})") from None
    if "runs" not in tables:
        raise ValueError(f"{flag} {redact_uri(store)}: an SQLite file without MLflow's tables, not an MLflow store")
    return store


def sweep_id() -> str | None:
    """One id shared by every job of a multirun (its sweep folder), None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return sweep_id_of(hc.sweep.dir)


def sweep_id_of(sweep_dir: str | Path) -> str:
    """outputs/multirun/2026-11-25/14-38-29-123456 -> 2026-11-25_14-38-29-123456"""
    return "_".join(Path(sweep_dir).parts[-2:])


def check_server(uri: str, timeout: float = 5.0, key: str = "logger.tracking_uri=") -> None:
    """Fail within seconds, not after MLflow's minutes of retries, when no server answers.
    Credentials in the URI (http://user:password@host) are sent as basic auth, as MLflow does."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    bare = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
    request = urllib.request.Request(bare.rstrip("/") + "/health")
    if parts.username is not None:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise ValueError(
        f"{key}{redact_uri(uri)}: no MLflow server answers there ({reason}); start it, or drop the option "
        "to use the local store outputs/mlflow.db"
    )


def find_resumable(cfg: DictConfig) -> tuple[str, Path, Path] | None:
    """(run id, run folder, checkpoint) of the run ``resume`` names, or of the
    latest unfinished run with this config's hash when it is ``auto``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri(cfg))
    if str(cfg.resume) != "auto":
        try:
            candidates = [client.get_run(str(cfg.resume))]
        except Exception:
            raise ValueError(
                f"resume={cfg.resume}: no such MLflow run in {redact_uri(tracking_uri(cfg))} (use resume=auto or a run id)"
            ) from None
        if candidates[0].info.status == "FINISHED":
            raise ValueError(f"resume={cfg.resume}: that run already FINISHED; nothing to continue")
        tags = candidates[0].data.tags
        if tags.get("sweeplab.config_hash") not in (None, identity.config_hash(cfg)):
            # Checked before the run is touched: a wrong command must not mark it FAILED.
            raise ValueError(
                f"resume={cfg.resume}: that run was trained with another config; repeat its overrides "
                f"({tags.get('sweeplab.overrides') or 'none'}) with resume={cfg.resume}"
            )
    else:
        candidates = _same_config_runs(client, cfg, "!= 'FINISHED'", order_by=["attributes.start_time DESC"])
    from sweeplab.record.checkpoints import RESUMABLE, fetch, load_checkpoint

    for run in candidates:
        run_dir = Path(run.data.tags.get("sweeplab.run_dir", ""))
        local = [run_dir / "checkpoints" / name for name in RESUMABLE if run_dir.name and (run_dir / "checkpoints" / name).exists()]
        if not local and run.info.status != "RUNNING":  # trained elsewhere (or its folder is gone): from the run's artifacts
            fetched = fetch(client, run.info.run_id, RESUMABLE, Path(cfg.paths.run_dir))
            if fetched is not None:
                print(f"sweeplab-train: resume: {run_dir} is not on this machine; {fetched.name} downloaded from the run's artifacts")
                run_dir, local = Path(cfg.paths.run_dir), [fetched]
        for path in local:
            try:  # a file cut short (full disk, kill mid-write) must not block every later resume
                load_checkpoint(path, key="resume", training_state=True)
            except (ValueError, OSError) as exc:
                print(f"sweeplab-train: resume: skipping {path}: {exc}")
                continue
            return run.info.run_id, run_dir, path
    if str(cfg.resume) != "auto":
        raise ValueError(
            f"resume={cfg.resume}: that run has no checkpoint to continue from, here or among its artifacts (logger.log_checkpoints=none?)"
        )
    return None


TIME_METRIC = "time/fit_s"  # seconds to train and test: what a sweeper can minimise beside a score (not logged: MLflow has it)


def find_finished(cfg: DictConfig) -> tuple[str, dict[str, float]] | None:
    """(run id, metrics) of a FINISHED run of this experiment with the same config hash, if any;
    a run an Optuna pruner stopped early (tag sweeplab.pruned) is no finished result.

    Queried through a client, not mlflow.set_tracking_uri, which would set
    MLFLOW_TRACKING_URI for the rest of the process.
    """
    from mlflow.tracking import MlflowClient

    # A pruned run stopped early: its score is of a shorter training, not this config's result.
    complete = [
        r
        for r in _same_config_runs(MlflowClient(tracking_uri(cfg)), cfg, "= 'FINISHED'", max_results=50)
        if r.data.tags.get("sweeplab.pruned") != "true"
    ]
    runs = complete[:1]
    if not runs:
        return None
    seconds = (runs[0].info.end_time - runs[0].info.start_time) / 1000 if runs[0].info.end_time else math.nan
    return runs[0].info.run_id, {**runs[0].data.metrics, TIME_METRIC: seconds}


def close_stale_runs(cfg: DictConfig, keep: str | None = None) -> list[Any]:
    """Close (KILLED, with the reason as ``sweeplab.error``) RUNNING runs of this config whose process is gone."""
    from mlflow.tracking import MlflowClient

    from sweeplab.record import liveness

    client = MlflowClient(tracking_uri(cfg))
    runs = [r for r in _same_config_runs(client, cfg, "= 'RUNNING'") if r.info.run_id != keep]
    return liveness.close_stale(client, runs)


def reopen_run(logger: Any, run_id: str) -> None:
    """A resumed run: RUNNING again, in this process, its interruption's error gone."""
    from sweeplab.record import liveness

    client = logger.experiment
    client.update_run(run_id, status="RUNNING")
    if "sweeplab.error" in client.get_run(run_id).data.tags:  # the interruption is over
        client.delete_tag(run_id, "sweeplab.error")
    for key, value in liveness.process_tags().items():
        client.set_tag(run_id, key, value)
    skip_logged_steps(logger, run_id)  # an epoch trained again is not logged twice


def describe_run(
    logger: Any, run_id: str, run_dir: Path, task: str, kind: str, cfg: DictConfig, tags: dict[str, str], resumed: bool
) -> dict[str, str]:
    """Where the run's files are, what it computes, ``tags``, and every config value as a param:
    one write to the store (a fused group starts its trials' runs in turn). Returns the run's
    params as the store holds them now."""
    tags = {"sweeplab.run_dir": str(run_dir.resolve()), "sweeplab.task": task, "sweeplab.model_kind": kind, **tags}
    return log_params(logger.experiment, run_id, run_params(cfg), tags=tags, resumed=resumed)


def skip_logged_steps(logger: Any, run_id: str) -> None:
    """Make ``logger`` drop a metric point whose step the run's history already
    has: a resumed run trains again what its last checkpoint did not hold."""
    client = logger.experiment
    logged = {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in client.get_run(run_id).data.metrics}
    log = logger.log_metrics

    def log_new(metrics: dict[str, float], step: int | None = None) -> None:
        new = {k: v for k, v in metrics.items() if step is None or step > logged.get(k, -1)}
        if new:
            log(new, step)

    logger.log_metrics = log_new


def _same_config_runs(client: Any, cfg: DictConfig, status: str, **search: Any) -> list[Any]:
    """Runs of this experiment with this config's hash whose status matches ``status``
    (e.g. ``"= 'FINISHED'"``); none when the experiment does not exist yet."""
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`sweeplab.config_hash` = '{identity.config_hash(cfg)}' and attributes.status {status}",
        **search,
    )


def artifact_root(cfg: DictConfig, uri: str) -> str | None:
    """Local stores keep artifacts beside the database; a server decides its own."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (Path(cfg.paths.outputs).resolve() / "mlartifacts").as_uri()


MLFLOW_RUN = "sweeplab.record.tracking.MlflowRun"


class MlflowRun:
    """The MLflow record of a run Lightning does not train (a scikit-learn model, a
    tabular agent): the run, tags, params and metrics that Lightning's ``MLFlowLogger``
    writes, through the part of its interface sweeplab uses (``experiment``, ``run_id``,
    ``log_hyperparams``, ``log_metrics``, ``finalize``), without importing Lightning
    (about 5 s of a process's start). The same config keys build it (conf/logger/mlflow.yaml)."""

    def __init__(
        self,
        experiment_name: str = "sweeplab",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        tags: dict[str, Any] | None = None,
        prefix: str = "",
        artifact_location: str | None = None,
        run_id: str | None = None,
        synchronous: bool | None = None,
        **_: Any,  # MLFlowLogger's save_dir and log_model: its local fallback store and checkpoint logging (sweeplab does both itself)
    ) -> None:
        from mlflow.tracking import MlflowClient

        self._experiment_name, self._run_name, self._run_id = experiment_name, run_name, run_id
        self._tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
        self.tags, self._prefix, self._artifact_location = dict(tags or {}), prefix, artifact_location
        self._log_batch_kwargs = {} if synchronous is None else {"synchronous": synchronous}
        self._experiment_id: str | None = None
        self._client = MlflowClient(self._tracking_uri or None)
        self._initialized = False

    @property
    def experiment(self) -> Any:
        """The MlflowClient; the first use creates the run (or finds the one given by ``run_id``)."""
        if self._initialized:
            return self._client
        import mlflow

        mlflow.set_tracking_uri(self._tracking_uri or None)
        if self._run_id is not None:
            self._experiment_id = self._client.get_run(self._run_id).info.experiment_id
        else:
            from mlflow.tracking.context.registry import resolve_tags
            from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

            found = self._client.get_experiment_by_name(self._experiment_name)
            if found is not None and found.lifecycle_stage != "deleted":
                self._experiment_id = found.experiment_id
            else:
                self._experiment_id = self._client.create_experiment(self._experiment_name, artifact_location=self._artifact_location)
            if self._run_name is not None:
                self.tags[MLFLOW_RUN_NAME] = self._run_name
            self._run_id = self._client.create_run(self._experiment_id, tags=resolve_tags(self.tags)).info.run_id
        self._initialized = True
        return self._client

    @property
    def run_id(self) -> str | None:
        _ = self.experiment
        return self._run_id

    @property
    def experiment_id(self) -> str | None:
        _ = self.experiment
        return self._experiment_id

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        log_params(self.experiment, self.run_id, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        points = metric_points(metrics, step, self._prefix, int(time.time() * 1000))
        self.experiment.log_batch(self.run_id, metrics=points, **self._log_batch_kwargs)

    def finalize(self, status: str = "success") -> None:
        if self._initialized:
            status = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}.get(status, status)
            self.experiment.set_terminated(self.run_id, status)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters with the last one an ellipsis: visibly cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_params(
    client: Any, run_id: str, params: dict[str, Any], tags: dict[str, str] | None = None, resumed: bool = True
) -> dict[str, str]:
    """``params`` (flattened) as the run's params, each whole up to what MLflow takes (6000
    characters; Lightning's MLFlowLogger cuts at 250, so runs whose hidden_sizes or data.path
    differ past that showed the same value), then visibly cut, with ``tags`` in the same write.
    A param the run has already (``resumed``) keeps its value: MLflow refuses to change one.
    Returns the run's params as the store then holds them."""
    from mlflow.entities import Param, RunTag
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    logged = client.get_run(run_id).data.params if resumed else {}
    items = [Param(key=str(k), value=cut(str(v), MAX_PARAM_VAL_LENGTH)) for k, v in flatten(dict(params)).items() if str(k) not in logged]
    run_tags = [RunTag(key, value) for key, value in (tags or {}).items()]
    if not items and not run_tags:  # nothing new (Lightning's log_hyperparams on a run that has them all)
        return dict(logged)
    for start in range(0, max(len(items), 1), 100):  # MLflow takes 100 params a call
        client.log_batch(run_id, params=items[start : start + 100], tags=run_tags if start == 0 else [])
    return {**logged, **{p.key: p.value for p in items}}


def metric_points(metrics: dict[str, float], step: int | None, prefix: str, timestamp: int) -> list[Any]:
    """The ``mlflow.entities.Metric`` points Lightning's ``MLFlowLogger.log_metrics`` sends for ``metrics``."""
    from mlflow.entities import Metric

    return [
        Metric(key=re.sub(r"[^a-zA-Z0-9_/. -]+", "", f"{prefix}-{k}" if prefix else k), value=float(v), timestamp=timestamp, step=step or 0)
        for k, v in metrics.items()
        if not isinstance(v, str)
    ]


def sql_store(logger: Any) -> Any:
    """The SQL store a synchronous MLflow logger writes to (None: another store, or asynchronous logging)."""
    if not is_mlflow_logger(logger) or getattr(logger, "_log_batch_kwargs", {}).get("synchronous") is False:
        return None
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(logger.experiment, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def write_points_together(store: Any, runs: list[tuple[str, list[Any]]]) -> None:
    """Metric points of several runs on one SQL store in one transaction: the rows ``log_batch``
    writes (the points, and each run's latest value a key, kept as MLflow keeps it: the greatest
    ``(step, timestamp, value)``), without its two transactions, run lookups and latest-value
    query a call (a fused group's epoch end: 16 runs 137 ms instead of 698 ms on SQLite). The
    runs must be active and written by nobody else meanwhile. Raises on any failure, having
    written nothing."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker(read_only=False) as session:
        ids = sorted({run_id for run_id, _ in runs})
        latest = {}
        for start in range(0, len(ids), 500):  # bound the bound parameters, as MLflow does
            found = session.query(SqlLatestMetric).filter(SqlLatestMetric.run_uuid.in_(ids[start : start + 500])).all()
            latest.update({(m.run_uuid, m.key): m for m in found})
        rows = []
        for run_id, points in runs:
            for point in points:
                is_nan, value = store.sanitize_metric_value(point.value)
                fields = {"key": point.key, "value": value, "timestamp": point.timestamp, "step": point.step, "is_nan": is_nan}
                rows.append(SqlMetric(run_uuid=run_id, **fields))
                held = latest.get((run_id, point.key))
                if held is None:
                    latest[(run_id, point.key)] = held = SqlLatestMetric(run_uuid=run_id, **fields)
                    session.add(held)
                elif (point.step, point.timestamp, value) > (held.step, held.timestamp, held.value):
                    held.value, held.step, held.timestamp, held.is_nan = value, point.step, point.timestamp, is_nan
        session.add_all(rows)


def is_mlflow_logger(logger: Any) -> bool:
    """An MLflow record: ``MlflowRun`` or Lightning's ``MLFlowLogger`` (checked only where Lightning is imported)."""
    if isinstance(logger, MlflowRun):
        return True
    if "lightning.pytorch" not in sys.modules:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    return isinstance(logger, MLFlowLogger)


def check_reachable(cfg: DictConfig) -> None:
    """A tracking server that does not answer is one line before the data is loaded or Lightning imported."""
    if uses_mlflow(cfg) and (uri := tracking_uri(cfg)).startswith(("http://", "https://")):
        check_server(uri)


def ensure_experiment(cfg: DictConfig) -> str:
    """Create the store's tables and the experiment once, return the experiment id.

    Several processes creating a NEW SQLite store at once race in MLflow's
    schema migration (`table ... already exists`). Doing it here, in the
    parent before any job starts (``sweeps.SweepCallback``), leaves the jobs
    only existing tables to open.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        new_sqlite_store(Path(uri.removeprefix("sqlite:///")))
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    if uri.startswith("sqlite:///"):
        _use_wal(Path(uri.removeprefix("sqlite:///")))
    if experiment is None:
        try:
            experiment_id = client.create_experiment(cfg.experiment_name, artifact_location=artifact_root(cfg, uri))
        except Exception:  # another process created it between our two calls
            experiment = client.get_experiment_by_name(cfg.experiment_name)
            if experiment is None:
                raise
    if experiment is not None:
        experiment_id = experiment.experiment_id
        if experiment.tags.get(EXPERIMENT_KIND[0]):
            return experiment_id
    # MLflow 3's UI opens an experiment without this tag on its GenAI (traces)
    # page; tagged as model development it opens on the runs table.
    again_on_duplicate_key(client.set_experiment_tag, experiment_id, *EXPERIMENT_KIND)
    return experiment_id


_DUPLICATE_KEY = ("UNIQUE constraint failed", "Duplicate entry", "duplicate key value")


def again_on_duplicate_key(call: Any, *args: Any, attempts: int = 3, **kwargs: Any) -> Any:
    """Call an MLflow write that looks a row up and inserts it when missing.

    Two processes doing that at the same moment both insert and the store's
    unique key refuses the second (sqlite3.IntegrityError, or the same error
    from a server); asked again, it finds the row the first wrote.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except MlflowException as error:
            if attempt == attempts or not any(text in str(error) for text in _DUPLICATE_KEY):
                raise
    return None


class StoreNotCreated(ValueError):
    """A new SQLite store could not be made (a full disk, a file-size limit)."""


def new_sqlite_store(db: Path) -> None:
    """A new SQLite store as a copy of an empty one made by this MLflow version.

    MLflow creates a store by running its ~60 schema migrations (about 2 s);
    the first store made on a machine is kept, empty, in the user's cache
    (``$XDG_CACHE_HOME/sweeplab``, one file per MLflow version) and copied.
    The copy is what MLflow itself would have made, its Default experiment's
    artifact folder included."""
    import shutil
    import sqlite3

    import mlflow

    if db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sweeplab"
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    partial = db.with_name(f".{db.name}.{os.getpid()}.partial")
    try:
        try:
            if not template.exists():
                _make_template(template)
            shutil.copyfile(template, partial)
        except OSError:  # a read-only or full cache: MLflow makes the store, into the partial file all the same
            partial.unlink(missing_ok=True)
            from mlflow.tracking import MlflowClient

            MlflowClient(f"sqlite:///{partial}").search_experiments()
        with sqlite3.connect(partial) as copy:  # MLflow's default: ./mlruns of the folder the store was made from
            copy.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (str(Path.cwd() / "mlruns" / "0"),))
        copy.close()
        try:
            os.link(partial, db)  # whole or not at all, and never over a store another process just made
        except FileExistsError:
            pass
    except Exception as exc:  # a full disk while it is made: nothing is left behind, and the line says so
        found = re.search(r"\(sqlite3\.\w+\) ([^\n\[(]+)", str(exc))
        reason = getattr(exc, "strerror", None) or (found.group(1).strip() if found else type(exc).__name__)
        raise StoreNotCreated(
            f"the MLflow store {db} could not be created ({reason}: a full disk?); nothing was left behind: free space "
            "(or put paths.outputs / logger.tracking_uri elsewhere) and run the same command again"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _make_template(template: Path) -> None:
    import fcntl

    from mlflow.tracking import MlflowClient

    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel first runs make it once
        if template.exists():
            return
        building = template.with_name(f".{template.name}.{os.getpid()}")
        building.unlink(missing_ok=True)
        try:
            MlflowClient(f"sqlite:///{building}").search_experiments()  # MLflow creates the tables
            building.replace(template)
        finally:
            building.unlink(missing_ok=True)  # a cache that filled up keeps no half-made template


def _use_wal(db: Path) -> None:
    """Write-ahead logging: readers no longer block the writer, so parallel jobs
    logging to one SQLite file wait less for its lock. Stored in the file itself."""
    import sqlite3

    if db.exists():
        with sqlite3.connect(db, timeout=30) as conn:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# An interpolation of another config value (${seed}, ${paths.run_dir}/checkpoints,
# ${oc.select:model.weights,null}); ${oc.env:...} and ${now:...} bring values of their own.
_COPY = re.compile(r"^\$\{(?!oc\.env|now:|hydra:)[^}]*\}")


# What says how a run is started, shown or recorded, not what it trains: not params (the whole
# config is the run's config.yaml artifact). A resumed run logs its params again, and MLflow
# refuses a changed value, so ``resume`` must not be one either.
BOOKKEEPING = (
    "resume",
    "ckpt_path",
    "print_config",
    "skip_finished",
    "run_name",
    "experiment_name",
    "optimized_metric",
    "optimized_mode",
    "tags",
    "paths",
    "logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
)
# Callbacks that save, show or summarise: their options change no number of the run.
BOOKKEEPING_CALLBACKS = ("ModelCheckpoint", "OnExceptionCheckpoint", "ProgressBar", "ModelSummary", "LearningRateMonitor")
# Groups whose option is logged by name (optimizer: sgd), standing for its _target_.
NAMED_GROUPS = (
    "data",
    "model",
    "text_model",
    "optimizer",
    "scheduler",
    "loss",
    "trainer",
    "callbacks",
    "env",
    "agent",
    "experiment",
    "debug",
)


def bookkeeping(key: str, callbacks: Any) -> bool:
    """Whether config ``key`` says how a run starts, shows or is recorded rather than what it trains
    (``callbacks``: the config's callbacks, whose class decides for their options)."""
    if key in BOOKKEEPING or key.startswith(tuple(f"{k}." for k in BOOKKEEPING)):
        return True
    if key.startswith("callbacks."):
        name = key.split(".")[1]
        target = str((callbacks.get(name) or {}).get("_target_", ""))
        return target.endswith(BOOKKEEPING_CALLBACKS) or name.endswith(("progress_bar", "checkpoint", "summary"))
    return False


def run_params(cfg: DictConfig) -> dict[str, str]:
    """What defines the run, flattened (``optimizer.lr``), secrets masked: each config
    group's option by name (``optimizer: sgd``) and the values that change what is
    trained. Not logged: bookkeeping (paths, logger, progress bar, checkpoint options,
    print_config ...), the ``_target_`` of a group whose option is named (unless typed on
    the command line; a config composed outside the CLI names no option and keeps it), and values that copy another by interpolation (``data.seed: ${seed}``
    is logged once, as ``seed``), so a comparison of runs opens on what differs."""
    values = resolved(cfg)
    written = flatten(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
    typed = {o.lstrip("+~").split("=", 1)[0] for o in overrides()}
    callbacks = values.get("callbacks") or {}
    params = {group: option for group, option in choices().items() if group in NAMED_GROUPS}
    for k, v in flatten(mask_secrets(values)).items():
        named = k.split(".", 1)[0] in params  # its group's option is a param: its class is no news
        if bookkeeping(k, callbacks) or k.endswith("._partial_") or (named and k.endswith("._target_") and k not in typed):
            continue
        if k in params or (isinstance(written.get(k), str) and _COPY.match(written[k])):
            continue  # an empty group (scheduler: {}) is logged by its option's name
        params[k] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return params


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {redact_uri(uri)}"


UI_ADDRESS = "http://127.0.0.1:5000"  # where `sweeplab ui` serves a local store


def runs_page(uri: str, experiment_id: str, run_id: str | None = None, view: str | None = None) -> str:
    """The MLflow UI page that shows a run, or a saved view of the runs table (``save_runs_view``).
    ``#/experiments/<id>`` alone opens MLflow 3's GenAI overview (traces, no runs): the runs
    table has its own route. A server's own address, else where `sweeplab ui` serves."""
    base = redact_uri(uri).rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    page = f"{base}/#/experiments/{experiment_id}/runs"
    if run_id:
        return f"{page}/{run_id}"
    return f"{page}?viewStateShareKey={view}" if view else page


SHARED_VIEW = "mlflow.sharedViewState."  # MLflow's UI: the experiment tag of a saved view of its runs table


def save_runs_view(
    client: Any,
    experiment_id: str,
    name: str,
    sweep: str,
    metric: str | None,
    scores: list[str],
    params: list[str],
) -> str:
    """Save, as MLflow's UI does when a view is shared, a view of ``sweep``'s runs ordered by
    ``metric`` (best first), with ``scores`` and ``params`` as columns; return its key. (Which
    parent rows are expanded is not part of a shared view: MLflow drops it.)"""
    from sweeplab.metrics.scores import lower_is_better

    key = "sweep-" + re.sub(r"[^\w.-]", "_", sweep)
    state: dict[str, Any] = {
        # Every job of the sweep: those it trained and the FINISHED runs it reused (skip_finished adds
        # the sweep to their sweeplab.sweeps), as `sweeplab compare --sweep` lists them.
        "searchFilter": f"tags.`sweeplab.sweeps` LIKE '%{sweep}%'",
        "selectedColumns": [*(f"metrics.`{m}`" for m in scores), *(f"params.`{p}`" for p in params)],
    }
    if metric:
        state.update(orderByKey=f"metrics.`{metric}`", orderByAsc=lower_is_better(metric))
    now = int(time.time() * 1000)
    envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, SHARED_VIEW + key, json.dumps(envelope))
    return key


def experiment_id_of(uri: str, name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    try:
        experiment = MlflowClient(uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - a store gone quiet: the page is a courtesy, the run is already safe
        return None
    return experiment.experiment_id if experiment else None


def see_in_ui(uri: str, page: str) -> str:
    """What to do to look at ``page``: open it (a server), or start `sweeplab ui` first (a local store)."""
    if uri.startswith(("http://", "https://")):
        return f"open {page}"
    store = "" if uri == default_tracking_uri() else f" --store {redact_uri(uri)}"
    return f"sweeplab ui{store}, then open {page}"

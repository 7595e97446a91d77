"""A run end to end, in process, against a temporary MLflow store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, r2_score

from sweeplab.record.tracking import TIME_METRIC

from conftest import FAST, runs_of, saved_predictions, store_overrides, train_in_process


def _artifacts(uri: str, run_id: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    return {a.path for a in MlflowClient(uri).list_artifacts(run_id)}


@pytest.mark.parametrize("data,binary", [("digits", False), ("breast_cancer", True)])
def test_logged_test_metrics_equal_sklearn(data: str, binary: bool, store, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_in_process([f"data={data}", "trainer.max_epochs=3", *store_overrides(store)], run_dir)
    runs = runs_of(store["uri"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run.status == "FINISHED"
    y_true, y_pred = saved_predictions(run_dir)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary" if binary else "macro", zero_division=0)
    expected = {"accuracy": accuracy_score(y_true, y_pred), "precision": p, "recall": r, "f1": f}
    for key, value in expected.items():
        assert run[f"metrics.test/{key}"] == pytest.approx(value, abs=1e-6), key
    for stage in ("train", "val", "test"):
        for key in ("accuracy", "precision", "recall", "f1", "loss"):
            assert f"metrics.{stage}/{key}" in runs.columns
    assert "metrics.lr" in runs.columns


def test_regression_metrics_and_artifacts(store, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = train_in_process(["data=diabetes", "trainer.max_epochs=3", *store_overrides(store)], run_dir)
    y_true, y_pred = saved_predictions(run_dir)
    assert metrics["test/r2"] == pytest.approx(r2_score(y_true, y_pred), abs=1e-5)
    run = runs_of(store["uri"]).iloc[0]
    assert {"metrics.test/mse", "metrics.test/mae", "metrics.test/r2"} <= set(run.index)
    assert "predicted_vs_true.png" in _artifacts(store["uri"], run.run_id)


def test_params_tags_and_artifacts(store, tmp_path: Path) -> None:
    overrides = ["optimizer=sgd", "optimizer.lr=0.07", "scheduler=step", "trainer.max_epochs=2", "+tags.owner=ana"]
    train_in_process([*overrides, *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    assert run["params.optimizer.lr"] == "0.07"
    assert run["params.optimizer._target_"] == "torch.optim.SGD"
    assert run["params.scheduler.step_size"] == "5"
    assert run["params.data.batch_size"] == "64"
    assert run["tags.sweeplab.version"] == "0.1.0"
    assert run["tags.sweeplab.task"] == "multiclass"
    assert run["tags.owner"] == "ana"
    assert len(run["tags.sweeplab.config_hash"]) == 16
    assert {"config.yaml", "confusion_matrix.png", "classification_report.txt", "test_predictions.csv"} <= _artifacts(
        store["uri"], run.run_id
    )


def test_same_seed_same_metrics(store, tmp_path: Path) -> None:
    first = train_in_process(["seed=3", *FAST, "logger=none"], tmp_path / "a")
    second = train_in_process(["seed=3", *FAST, "logger=none"], tmp_path / "b")
    other = train_in_process(["seed=4", *FAST, "logger=none"], tmp_path / "c")
    assert first.pop(TIME_METRIC) > 0 and second.pop(TIME_METRIC) > 0  # the seconds it took: returned for sweepers, not a score
    assert first == second
    assert first != other


def test_a_run_that_raises_is_failed_not_running(store, tmp_path: Path, monkeypatch) -> None:
    from sweeplab.families.torch.module import SweepModule

    def boom(self, batch, batch_idx):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(SweepModule, "training_step", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_in_process([*FAST, *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    assert run.status == "FAILED"
    assert "simulated crash" in run["tags.sweeplab.error"]


def test_exploding_loss_stops_with_epoch_and_step(store, tmp_path: Path) -> None:
    overrides = ["optimizer=sgd", "optimizer.lr=1e12", "optimizer.momentum=0.0", "trainer.max_epochs=3", "callbacks=none"]
    with pytest.raises(FloatingPointError, match=r"loss became .* at epoch \d+, step \d+"):
        train_in_process([*overrides, *store_overrides(store)], tmp_path / "run")
    assert runs_of(store["uri"]).iloc[0].status == "FAILED"


def test_secret_looking_values_never_reach_the_store(store, tmp_path: Path) -> None:
    secret = "hunter2-do-not-log"
    train_in_process([*FAST, f"+data_api_token={secret}", "+tags.note=ok", *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    assert run["params.data_api_token"] == "***"
    assert secret not in (tmp_path / "run" / "config.yaml").read_text()
    assert secret.encode() not in Path(store["uri"].removeprefix("sqlite:///")).read_bytes()


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: must be a finite number > 0"),
        ("optimizer.lr=0", "optimizer.lr=0: must be a finite number > 0"),
        ("data.batch_size=0", "data.batch_size=0: must be a positive integer"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be a positive integer"),
        ("trainer.accelerator=tpx", "trainer.accelerator='tpx': choose one of"),
        ("loss=mse", "loss=MSELoss does not fit the run's multiclass task"),
    ],
)
def test_bad_values_fail_before_any_run_is_created(override: str, message: str, store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        train_in_process([*FAST, *store_overrides(store), override], tmp_path / "run")
    runs = runs_of(store["uri"]) if Path(store["uri"].removeprefix("sqlite:///")).exists() else []
    assert len(runs) == 0 or set(runs.status) <= {"FAILED"}


def test_config_hash_ignores_where_a_run_writes() -> None:
    from sweeplab.config import compose
    from sweeplab.record.identity import config_hash

    base = ["optimizer=sgd"]
    assert config_hash(compose(base, run_dir="/a")) == config_hash(compose([*base, "paths.outputs=/elsewhere"], run_dir="/b"))
    assert config_hash(compose(base, run_dir="/a")) == config_hash(compose([*base, "resume=auto", "run_name=x"], run_dir="/a"))
    assert config_hash(compose(base, run_dir="/a")) != config_hash(compose([*base, "optimizer.lr=0.5"], run_dir="/a"))


def test_run_returns_every_stage(tmp_path: Path) -> None:
    metrics = train_in_process([*FAST, "logger=none"], tmp_path / "run")
    for stage in ("train", "val", "test"):
        assert {f"{stage}/accuracy", f"{stage}/f1", f"{stage}/loss"} <= set(metrics)


def test_finding_finished_runs_leaves_the_process_tracking_uri_alone(store, tmp_path: Path) -> None:
    import os

    from sweeplab.config import compose
    from sweeplab.record.tracking import find_finished

    overrides = [*FAST, *store_overrides(store)]
    train_in_process(overrides, tmp_path / "run")
    found = find_finished(compose(overrides, run_dir=tmp_path / "other"))
    assert found is not None and "test/accuracy" in found[1]
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the next run in this process picks its own store


def test_params_hold_each_value_once_and_no_run_paths(tmp_path) -> None:
    from sweeplab.config import compose
    from sweeplab.record.tracking import run_params

    params = run_params(compose(["model=svm"], run_dir=tmp_path / "run"))
    assert params["seed"] == "42" and "experiment_name" not in params  # the experiment holds the run already
    assert params["model._target_"] == "sklearn.svm.SVC"  # composed outside the CLI: no option name stands for it
    assert not [k for k in params if k.startswith(("logger.", "tags", "print_config", "callbacks.progress_bar"))], params
    assert not [k for k in params if k.startswith("paths.") or k.endswith(("dirpath", "random_state", "data.seed"))], params
    assert str(tmp_path) not in "".join(params.values())


def test_system_metrics_are_logged_when_asked(store, tmp_path) -> None:
    from conftest import runs_of, store_overrides, train_in_process

    train_in_process(
        [
            "trainer.max_epochs=6",
            "callbacks=none",
            "logger.system_metrics=true",
            "logger.system_metrics_every=0.2",
            *store_overrides(store),
        ],
        tmp_path / "run",
    )
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED"
    assert {"metrics.system/cpu_utilization_percentage", "metrics.system/system_memory_usage_megabytes"} <= set(run.dropna().index)
    with pytest.raises(ValueError, match=r"logger.system_metrics_every=0: must be a finite number > 0"):
        train_in_process(["logger.system_metrics=true", "logger.system_metrics_every=0", *store_overrides(store)], tmp_path / "bad")
    assert "RUNNING" not in set(runs_of(store["uri"]).status)


def test_a_new_store_is_a_copy_of_the_one_mlflow_makes(tmp_path: Path, monkeypatch) -> None:
    """New SQLite stores are copied from an empty one kept per MLflow version (2 s of migrations saved a store)."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from sweeplab.record.tracking import new_sqlite_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    new_sqlite_store(tmp_path / "a" / "mlflow.db")  # makes the cached template, then copies it
    new_sqlite_store(tmp_path / "b" / "mlflow.db")
    assert len(list((tmp_path / "cache" / "sweeplab").glob("mlflow-*-empty.db"))) == 1
    MlflowClient(f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}").search_experiments()  # one MLflow makes itself

    def described(db: Path) -> tuple:
        """Tables, their columns, indexes, schema version and experiments (MLflow's own DDL text
        is not the same from one process to the next: its table rebuilds order some clauses by hash)."""
        with sqlite3.connect(db) as con:
            names = con.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
            columns = {t: sorted(con.execute(f"PRAGMA table_info('{t}')").fetchall()) for kind, t in names if kind == "table"}
            version = con.execute("SELECT * FROM alembic_version").fetchall()
            return sorted(names), columns, version, con.execute("SELECT experiment_id, name, artifact_location FROM experiments").fetchall()

    assert described(tmp_path / "b" / "mlflow.db") == described(tmp_path / "c" / "mlflow.db")
    client = MlflowClient(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))  # no cache to keep: MLflow makes it, in a temporary file
    new_sqlite_store(tmp_path / "d" / "mlflow.db")
    assert described(tmp_path / "d" / "mlflow.db") == described(tmp_path / "c" / "mlflow.db")
    assert not list((tmp_path / "d").glob(".*partial"))


def test_an_epoch_is_one_mlflow_write_with_every_point_kept(store, tmp_path: Path, monkeypatch) -> None:
    """Validation's epoch values wait for training's at the same step: one log_batch an epoch, nothing lost."""
    from mlflow.tracking import MlflowClient

    calls: list[dict[str, int]] = []
    log_batch = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), *args, **kwargs):
        calls.append({m.key: m.step for m in metrics})
        return log_batch(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    train_in_process(["trainer.max_epochs=3", "callbacks=none", "logger.log_model=false", *store_overrides(store)], tmp_path / "run")
    epochs = [c for c in calls if "train/loss" in c or "val/loss" in c]
    assert len(epochs) == 3 and all({"train/loss", "val/loss", "val/f1", "train/f1"} <= set(c) for c in epochs)
    run_id = runs_of(store["uri"]).run_id.iloc[0]
    history = {k: [(m.step, m.value) for m in MlflowClient(store["uri"]).get_metric_history(run_id, k)] for k in ("train/loss", "val/loss")}
    assert [s for s, _ in history["val/loss"]] == [s for s, _ in history["train/loss"]] == [c["val/loss"] for c in epochs]
    assert len({v for _, v in history["val/loss"]}) == 3  # three epochs' values, not one repeated


@pytest.mark.parametrize("nvml", [False, True], ids=["no-driver", "driver"])
def test_gpus_are_counted_by_the_cuda_runtime_where_nvidias_library_is_missing(nvml: bool, monkeypatch) -> None:
    """Lightning's NVML-based count is a failed dlopen at every Adam step on a machine without the
    driver; there torch's cached runtime count is used. With the library, Lightning's choice stays."""
    import ctypes

    from sweeplab.families import base

    def cdll(name, *args, **kwargs):
        if name == "libnvidia-ml.so.1" and not nvml:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv(base.NVML_CHECK, "1")
    base._gpu_count_from_the_runtime_without_nvml()
    assert (os.environ.get(base.NVML_CHECK) == "1") is nvml


@pytest.mark.cold_process  # counts the collections a fresh interpreter makes while it imports
def test_the_garbage_collector_waits_out_start_up_and_is_back_on_for_training(tmp_path: Path) -> None:
    """Start-up imports about a million objects; with the collector running the
    process made about ten full collections before its first step (1.2-1.4 s), and
    one collection over them when training starts cost 0.6-0.8 s: they are frozen instead."""
    import re

    from conftest import cli

    result = cli(
        [*FAST, "+callbacks.probe._target_=signal_callbacks.CollectorAtTrainStart", f"paths.outputs={tmp_path}"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    probe = re.search(r"COLLECTOR enabled=(\w+) full_collections=(\d+) frozen=(\d+)", result.stdout)
    assert probe, result.stdout[-2000:]
    assert probe[1] == "True"  # training and everything after it run with the collector on
    assert int(probe[2]) <= 1  # none since sweeplab's main started (one at most before it)
    assert int(probe[3]) > 500_000  # start-up's objects, never scanned again


def test_a_run_leaves_the_garbage_collector_as_it_found_it(store, tmp_path: Path, monkeypatch) -> None:
    import gc

    from sweeplab import start_up

    monkeypatch.setattr(start_up, "_collector_paused", None)  # as in a fresh process
    with pytest.raises(Exception, match="no_such_file.csv"):  # failing before training
        train_in_process(
            ["data=csv", f"data.path={tmp_path / 'no_such_file.csv'}", "data.target=y", *FAST, *store_overrides(store)], tmp_path / "a"
        )
    assert gc.isenabled()
    monkeypatch.setattr(start_up, "_collector_paused", None)
    gc.disable()  # the user's choice is kept
    try:
        train_in_process([*FAST, *store_overrides(store)], tmp_path / "b")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_process_that_goes_on_after_its_first_run_frees_that_runs_model(store, tmp_path: Path, monkeypatch) -> None:
    """Start-up's heap, the first run's model, trainer and data among it, is frozen while it
    trains; they hold each other in cycles, so a sweep's process that goes on to further jobs
    kept them for good unless the freeze ends with the first run."""
    import gc

    from sweeplab import start_up

    import signal_callbacks

    monkeypatch.setattr(start_up, "_collector_paused", None)  # as in a fresh process
    probe = ["+callbacks.remember._target_=signal_callbacks.RememberModule"]
    try:
        train_in_process([*FAST, *probe, *store_overrides(store)], tmp_path / "first")
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert signal_callbacks.MODULES_SEEN[-1]() is None
    finally:
        gc.unfreeze()
        signal_callbacks.MODULES_SEEN.clear()


def test_the_console_scripts_leave_the_heap_frozen_for_the_interpreters_teardown(store, tmp_path: Path) -> None:
    """Teardown ran the collector over the ~million objects the imports made,
    several times: 2.4 s at the end of every process. A frozen heap is skipped.
    An atexit handler registered before main() runs after it returns or exits."""
    import subprocess

    def frozen_at_exit(script: str, args: list[str]) -> tuple[subprocess.CompletedProcess, int]:
        code = (
            "import atexit, gc, sys\n"
            "atexit.register(lambda: print('FROZEN', gc.get_freeze_count(), flush=True))\n"
            f"sys.argv = ['{script}', *{args!r}]\n"
            f"from sweeplab.{'train' if script == 'sweeplab-train' else 'evaluate'} import main\n"
            "main()\n"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        return result, int(result.stdout.rsplit("FROZEN ", 1)[1].split()[0])

    result, frozen = frozen_at_exit("sweeplab-train", ["trainer.max_epochs=1", *store_overrides(store)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert frozen > 100_000
    ckpt = next(tmp_path.glob("**/checkpoints/best.ckpt"))
    result, frozen = frozen_at_exit("sweeplab-train", ["data=csv", f"data.path={tmp_path / 'missing.csv'}", "data.target=y"])
    assert result.returncode == 1 and "missing.csv" in result.stderr  # an error exit too
    assert frozen > 10_000
    result, frozen = frozen_at_exit("sweeplab-eval", [str(ckpt), "--store", store["uri"]])
    assert result.returncode == 0, result.stderr[-2000:]
    assert frozen > 100_000


@pytest.mark.parametrize(
    "ending, status, stderr",
    [
        ("pass", 0, ""),
        ("sys.exit(3)", 3, ""),
        ("sys.exit('no such thing')", 1, "no such thing"),
        ("1 / 0", 1, "x: error: ZeroDivisionError"),
    ],
)
def test_a_console_script_ends_as_python_would_without_its_teardown(tmp_path: Path, ending: str, status: int, stderr: str) -> None:
    """run_cli ends the process with os._exit (the modules' teardown took 0.2 s), but first
    waits for non-daemon threads (a thread pool's idle workers are told to end, as Python
    tells them), runs atexit handlers and flushes what they print."""
    import subprocess

    code = (
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "from sweeplab.errors import run_cli\n"
        "atexit.register(lambda: print('atexit ran'))\n"  # buffered: only a flush brings it out
        "from concurrent.futures import ThreadPoolExecutor\n"
        "pool = ThreadPoolExecutor(2)\n"  # its idle worker threads end with the interpreter's exit hooks, as MLflow's do
        "def entry():\n"
        "    pool.submit(lambda: None).result()\n"
        "    threading.Thread(target=lambda: (time.sleep(0.5), Path('late.txt').write_text('written'))).start()\n"
        f"    {ending}\n"
        "run_cli(entry, 'x')\n"
        "print('not reached')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == status, result.stderr
    assert result.stdout == "atexit ran\n"
    assert (tmp_path / "late.txt").read_text() == "written"
    assert stderr in result.stderr and "Traceback" not in result.stderr


def test_any_process_that_starts_a_run_freezes_its_heap_at_exit() -> None:
    """A launcher's worker (joblib, submitit) is not a console script: the pause at
    its first run arranges the freeze (a joblib sweep's end waited 3 s on its workers' teardown)."""
    import subprocess

    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('FROZEN', gc.get_freeze_count(), gc.isenabled(), flush=True))\n"
        "from sweeplab.start_up import collector_back_on, pause_collector_for_start_up\n"
        "pause_collector_for_start_up()\n"
        "assert not gc.isenabled()\n"
        "import numpy\n"
        "collector_back_on()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frozen, enabled = result.stdout.split()[1:]
    assert int(frozen) > 1000 and enabled == "True"

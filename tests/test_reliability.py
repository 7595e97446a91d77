"""Bad input, crashes and interruptions: nothing lost, everything explained."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import NO_MODEL, cli, runs_of, store_overrides, sweeps_of, train_in_process

# A short run that a test holds at a chosen epoch (signal_callbacks.HoldAtEpoch), so a
# signal or a kill lands at a known moment however busy the machine is.
SLOW_RUN = ["trainer.max_epochs=4", "callbacks.progress_bar=null", "+callbacks.hold._target_=signal_callbacks.HoldAtEpoch", *NO_MODEL]
TESTS = {"PYTHONPATH": str(Path(__file__).parent)}  # where the hold callback is imported from


def _hold_env(cwd: Path, epoch: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(TESTS)
    if epoch is not None:
        env.update(SWEEPLAB_TEST_HOLD=str(cwd), SWEEPLAB_TEST_HOLD_EPOCH=str(epoch))
    return env


def _start(args: list[str], cwd: Path, hold: int | None = None, **popen) -> subprocess.Popen:
    """The console script in the background; held at the start of epoch ``hold`` if given."""
    exe = Path(sys.executable).with_name("sweeplab-train")
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([str(exe), *args], cwd=cwd, text=True, env=_hold_env(cwd, hold), **popen)


def _held(cwd: Path, count: int = 1, timeout: float = 180) -> list[Path]:
    """The hold markers of ``count`` runs, once they are all held."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(cwd.glob("held-*"))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{count} held run(s) did not appear in {timeout}s")


def _wait_for(pattern: str, cwd: Path, timeout: float = 120) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = list(cwd.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{pattern} did not appear in {timeout}s")


def _store(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"


# -- signals and resume -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_marks_run_killed_and_keeps_checkpoints(signum: int, tmp_path: Path) -> None:
    proc = _start(SLOW_RUN, tmp_path, hold=1)
    _held(tmp_path)
    ckpt = _wait_for("outputs/runs/*/*/checkpoints/last.ckpt", tmp_path)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-2000:]  # 130 for Ctrl-C, 143 for SIGTERM
    runs = runs_of(_store(tmp_path))
    assert list(runs.status) == ["KILLED"]
    assert (ckpt.parent / "interrupted.ckpt").exists() and ckpt.exists()
    assert "add resume=auto to the same command" in stderr
    assert runs["tags.sweeplab.error"][0] == f"Interrupted: interrupted by {signal.Signals(signum).name}"
    if signum == signal.SIGINT:  # resumed to the end, the run no longer carries the interruption's error
        assert cli([*SLOW_RUN, "resume=auto"], cwd=tmp_path, env=TESTS).returncode == 0
        after = runs_of(_store(tmp_path))
        assert (
            list(after.status) == ["FINISHED"] and "sweeplab.error" not in MlflowClient(_store(tmp_path)).get_run(after.run_id[0]).data.tags
        )


@pytest.mark.slow
def test_ctrl_c_during_the_test_stage_exits_130_and_says_interrupted(tmp_path: Path) -> None:
    marker = tmp_path / "testing"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("sweeplab-train")
    proc = subprocess.Popen(
        [
            str(exe),
            "trainer.max_epochs=1",
            "callbacks.progress_bar=null",
            "+callbacks.pause._target_=signal_callbacks.PauseOnTestStart",
            f"+callbacks.pause.marker={marker}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    _wait_for("testing", tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    run = runs_of(_store(tmp_path)).iloc[0]
    assert run["status"] == "KILLED" and run["tags.sweeplab.error"] == "Interrupted: interrupted by SIGINT"


def _metric_points(cwd: Path, key: str) -> int:
    """Points of ``key`` in the store, read with sqlite3: an MLflow client here
    would race the training process's own creation of the store's tables."""
    db = cwd / "outputs" / "mlflow.db"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM metrics WHERE key = ?", (key,)).fetchone()[0]
    except sqlite3.Error:  # not created yet, or its tables not yet
        return 0


@pytest.mark.slow
def test_sigkill_after_an_epoch_that_did_not_improve_then_two_resumes(tmp_path: Path) -> None:
    """monitor_mode=max on val/loss: no epoch after the first improves, so only
    last.ckpt can hold epoch 2. Killed then, a resume must not train (and log)
    epoch 2 again; of two resumes started together, one trains and one refuses."""
    args = [*SLOW_RUN, "monitor_mode=max"]
    proc = _start(args, tmp_path, hold=2)  # held after two epochs, their checkpoints written
    marker = _held(tmp_path)[0]
    assert _metric_points(tmp_path, "val/loss") == 2
    proc.kill()  # SIGKILL: no handler runs, the MLflow run stays RUNNING
    marker.unlink()
    proc.communicate(timeout=60)
    before = runs_of(_store(tmp_path))
    assert list(before.status) == ["RUNNING"]
    import torch

    last = next(tmp_path.glob("outputs/runs/*/*/checkpoints/last.ckpt"))
    assert torch.load(last, weights_only=True)["epoch"] >= 1  # the end of the last finished epoch, not the best one

    first = _start([*args, "resume=auto"], tmp_path, hold=3)  # held inside the resumed run, holding its folder
    held = _held(tmp_path)[0]
    second = cli([*args, "resume=auto"], cwd=tmp_path, env=TESTS)
    assert second.returncode == 1
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"is being trained by process {first.pid} on" in lines[0], second.stderr[-2000:]
    held.unlink()  # let the first resume finish
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert f"resuming MLflow run {before.run_id[0]}" in out
    after = runs_of(_store(tmp_path))
    assert list(after.run_id) == list(before.run_id) and list(after.status) == ["FINISHED"]
    client = MlflowClient(_store(tmp_path))
    for key in ("val/loss", "train/loss", "train/accuracy", "val/f1"):
        steps = [m.step for m in client.get_metric_history(after.run_id[0], key)]
        assert len(steps) == 4 and len(set(steps)) == 4, (key, steps)  # every epoch once
    assert "test/f1" in client.get_run(after.run_id[0]).data.metrics


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_is_closed_by_the_next_run(tmp_path: Path) -> None:
    proc = _start(SLOW_RUN, tmp_path, hold=0)
    _held(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert not list(tmp_path.glob("outputs/runs/*/*/checkpoints/*.ckpt"))
    stale = runs_of(_store(tmp_path))
    assert list(stale.status) == ["RUNNING"] and stale["tags.sweeplab.pid"][0] == str(proc.pid)

    listed = subprocess.run(
        [str(Path(sys.executable).with_name("sweeplab")), "runs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert listed.returncode == 0 and stale.run_id[0] in listed.stdout and "gone" in listed.stdout, listed.stderr

    result = cli([*SLOW_RUN, "resume=auto"], cwd=tmp_path, env=TESTS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"run {stale.run_id[0]} of this config was left RUNNING by a process that is gone; marked KILLED" in result.stdout
    runs = runs_of(_store(tmp_path)).set_index("run_id")
    assert runs.loc[stale.run_id[0], "status"] == "KILLED"
    assert "ended before its first checkpoint" in runs.loc[stale.run_id[0], "tags.sweeplab.error"]
    assert sorted(runs.status) == ["FINISHED", "KILLED"]


def test_sweeplab_runs_close_marks_runs_of_dead_processes_killed(store, tmp_path: Path) -> None:
    import socket

    from sweeplab.record.liveness import _process_start

    dead = subprocess.Popen(["true"])
    dead.wait()
    client = MlflowClient(store["uri"])
    experiment = client.create_experiment("sweeplab")
    runs = {}
    for name, pid in (("dead", dead.pid), ("alive", os.getpid())):
        tags = {
            "sweeplab.host": socket.gethostname(),
            "sweeplab.pid": str(pid),
            "sweeplab.process_start": _process_start(os.getpid()) or "",
        }
        runs[name] = client.create_run(experiment, run_name=name, tags=tags).info.run_id
    exe = Path(sys.executable).with_name("sweeplab")
    result = subprocess.run(
        [str(exe), "runs", "--close", "--store", store["uri"]],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert client.get_run(runs["dead"]).info.status == "KILLED"
    assert "ended before its first checkpoint" in client.get_run(runs["dead"]).data.tags["sweeplab.error"]
    assert client.get_run(runs["alive"]).info.status == "RUNNING"  # this test's own process is alive


def test_last_checkpoint_is_the_last_epoch_even_when_it_did_not_improve(store, tmp_path: Path) -> None:
    import torch

    train_in_process(["trainer.max_epochs=3", "monitor_mode=max", "callbacks.progress_bar=null", *store_overrides(store)], tmp_path / "run")
    folder = tmp_path / "run" / "checkpoints"
    assert torch.load(folder / "best.ckpt", weights_only=True)["epoch"] == 0  # val/loss only fell: epoch 0 is the "max"
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 2
    assert not list(folder.glob(".*partial*"))  # atomic writes leave no temporary file behind


def test_resume_skips_an_unreadable_checkpoint_for_a_readable_one(store, tmp_path: Path) -> None:
    """A full disk used to leave a truncated checkpoint that every later resume=auto failed on."""
    from mlflow.tracking import MlflowClient as Client

    overrides = ["trainer.max_epochs=2", "callbacks.progress_bar=null", *store_overrides(store)]
    train_in_process(overrides, tmp_path / "run")
    client = Client(store["uri"])
    run_id = runs_of(store["uri"]).run_id[0]
    client.set_terminated(run_id, "KILLED")  # as if interrupted
    folder = tmp_path / "run" / "checkpoints"
    (folder / "interrupted.ckpt").write_bytes((folder / "last.ckpt").read_bytes())
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:1000])  # cut short
    from sweeplab.config import compose
    from sweeplab.record.tracking import find_resumable

    found = find_resumable(compose([*overrides, "resume=auto"], run_dir=tmp_path / "other"))
    assert found == (run_id, tmp_path / "run", folder / "interrupted.ckpt")


@pytest.mark.slow
def test_a_reused_run_folder_never_lends_its_checkpoints_to_the_next_config(tmp_path: Path) -> None:
    """Lightning's fit, given no checkpoint, loads the newest one in the folder: the second config
    used to continue the first one's last.ckpt and be logged FINISHED with its test scores."""
    folder = tmp_path / "fixed"
    first = cli([f"hydra.run.dir={folder}", "data=wine", "trainer.max_epochs=3", "callbacks.progress_bar=null", *NO_MODEL], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    uri = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    owner = runs_of(uri).run_id[0]
    assert (folder / "checkpoints" / ".owner").read_text().strip() == owner
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").glob("*.ckpt")}
    second_args = [
        f"hydra.run.dir={folder}",
        "data=wine",
        "optimizer.lr=1e-7",
        "trainer.max_epochs=4",
        "callbacks.progress_bar=null",
        *NO_MODEL,
    ]
    second = cli(second_args, cwd=tmp_path)
    assert second.returncode == 1
    line = second.stderr.strip().splitlines()[-1]
    assert f"holds the checkpoints of MLflow run {owner} (best.ckpt, last.ckpt)" in line and "another hydra.run.dir" in line, line
    assert len(runs_of(uri)) == 1  # refused before a run existed
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").glob("*.ckpt")} == before
    # In a folder of its own the same command trains from scratch: every epoch is its own, from 0.
    again = cli([f"hydra.run.dir={tmp_path / 'own'}", *second_args[1:]], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    newest = runs_of(uri).sort_values("start_time").iloc[-1]
    steps = [m.step for m in MlflowClient(uri).get_metric_history(newest.run_id, "val/loss")]
    assert len(steps) == 4 and newest["params.optimizer.lr"] == "1e-07"


def test_resume_auto_with_nothing_to_resume_starts_fresh(store, tmp_path: Path) -> None:
    metrics = train_in_process(["resume=auto", "trainer.max_epochs=1", "callbacks=none", *store_overrides(store)], tmp_path / "run")
    assert "test/accuracy" in metrics


# -- checkpoints --------------------------------------------------------------


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_payload_in_checkpoint_is_refused(store, tmp_path: Path, monkeypatch) -> None:
    import torch

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "extra": _Payload()}, evil)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"ckpt_path=.*evil.ckpt: refused: it holds pickled objects"):
        train_in_process([f"ckpt_path={evil}", *store_overrides(store)], tmp_path / "run")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("content,message", [(None, "no such file"), (b"not a zip", "not a checkpoint")])
def test_bad_checkpoint_path(content, message, store, tmp_path: Path) -> None:
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train_in_process([f"ckpt_path={path}", *store_overrides(store)], tmp_path / "run")
    assert not (Path(store["outputs"]) / "mlflow.db").exists() or len(runs_of(store["uri"])) == 0


def test_state_dict_without_lightning_wrapper_is_named(tmp_path: Path) -> None:
    import torch

    from sweeplab.record.checkpoints import load_checkpoint

    path = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_checkpoint(path)


def test_training_can_start_from_a_checkpoint(store, tmp_path: Path) -> None:
    train_in_process(["trainer.max_epochs=2", *store_overrides(store)], tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    metrics = train_in_process([f"ckpt_path={ckpt}", "trainer.max_epochs=3", *store_overrides(store)], tmp_path / "second")
    assert metrics["test/accuracy"] > 0.5


def test_a_run_started_from_another_runs_checkpoint_never_tests_that_runs_best(store, tmp_path: Path, capsys) -> None:
    """A checkpoint given as ckpt_path= brings its ModelCheckpoint's best_model_path along; a run
    that trains no epoch of its own (the checkpoint is at max_epochs) used to test that file."""
    overrides = ["trainer.max_epochs=2", "callbacks.progress_bar=null", *store_overrides(store)]
    train_in_process(overrides, tmp_path / "first")
    first = tmp_path / "first" / "checkpoints"
    (first / "best.ckpt").rename(first / "moved.ckpt")  # a read of the first run's best would now fail
    metrics = train_in_process([f"ckpt_path={first / 'last.ckpt'}", *overrides], tmp_path / "second")
    assert "test/accuracy" in metrics
    assert f"the best checkpoint on record ({first / 'best.ckpt'}) is another run's" in capsys.readouterr().out


# -- bad input through the CLI: one line, non-zero, nothing RUNNING -------------


def _csv(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty": "",
        "header_only": "a,b,label\n",
        "malformed": 'a,b\n1,2\n3,4,5,6\n"unterminated\n',
        "nan": "x1,x2,label\n1,,0\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)),
        "text": "x1,colour,label\n" + "".join(f"{i},{'red' if i % 3 else 'blue'},{i % 3}\n" for i in range(40)),
        "onemember": "x,label\n" + "".join(f"{i},{'a' if i % 2 else 'b'}\n" for i in range(30)) + "99,c\n",
        "huge": "x1,x2,label\n" + "".join(f"{i},{(i + 1) * 1e305},{i % 2}\n" for i in range(40)),
        "allnan": "x1,x2,label\n" + "".join(f"{i},,{i % 2}\n" for i in range(40)),
        "duplicated": "a,a,b,label\n" + "".join(f"{i},{i},{i},{i % 2}\n" for i in range(40)),
    }
    out = {}
    for name, text in files.items():
        out[name] = tmp_path / f"{name}.csv"
        out[name].write_text(text)
    return out


def _bad_checkpoints(tmp_path: Path) -> None:
    """A plain pickle, random bytes and a bare state dict, each named .ckpt."""
    import pickle

    import torch

    (tmp_path / "plain.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    (tmp_path / "random.ckpt").write_bytes(bytes(range(256)) * 8)
    torch.save({"state_dict": {"net.weight": torch.zeros(2)}}, tmp_path / "bare.ckpt")


# Every bad input of the CLI's own plumbing (validation before imports, data and
# model errors after them, checkpoints, the store, presets) through the console
# script; the other values through the same code in-process, where the message
# and the store are checked the same way at a fraction of the cost.
@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (["data=csv", "data.path=missing.csv", "data.target=y"], "data.path=missing.csv: no such file"),
        (
            ["data=csv", "data.path=text.csv", "data.target=lbl"],
            "data.target='lbl': no such column in text.csv; columns: x1, colour, label",
        ),
        (["data=csv"], "data.path is required and has no value"),
        (["optimizer.lr=0"], "optimizer.lr=0: must be a finite number > 0"),
        (["trainer.precision=16-mixed", "trainer.accelerator=cpu"], "trainer.precision=16-mixed: the CPU has no float16 mixed precision"),
        (["logger.tracking_uri=http://127.0.0.1:9"], "logger.tracking_uri=http://127.0.0.1:9: no MLflow server answers there"),
        (["resume=0123456789abcdef"], "resume=0123456789abcdef: no such MLflow run"),
        (["paths.outputs=afile/sub"], "afile"),
        (["model=kmeans", "data=diabetes"], "model=kmeans is a clustering model"),
        (["seed=abc"], "seed='abc': must be an integer from 0 to 4294967295"),
        (["experiment=nope"], "experiment=nope: no such preset; choose one of autoencoder_vs_pca, clustering_digits"),
        (["ckpt_path=plain.ckpt"], "refuses, on purpose, to load it with weights_only=False"),
        (["ckpt_path=plain.ckpt"], "torch's weights-only loader cannot read it (Unsupported operand"),
        (["experiment_name="], "experiment_name='': an MLflow experiment needs a name"),
        (["data=csv", "data.path=duplicated.csv", "data.target=label"], "data.path=duplicated.csv: the header names 'a' more than once"),
        (
            ["data=csv", "data.path=allnan.csv", "data.target=label", "data.missing=mean"],
            "data.path=allnan.csv: column(s) x2 hold no value in any row",
        ),
        (
            ["data=diabetes", "+data.task=binary"],
            "data.task: not an option of ArrayDataModule, the data chosen here; remove +data.task=...",
        ),
        (["paths.outputs=/proc/nope"], "/proc/nope: cannot create this folder (No such file or directory); run folders and the store"),
        (
            ["data=csv", "data.path=huge.csv", "data.target=label", "model=random_forest"],
            "data.path=huge.csv: values too large to train on in x2 (up to 4e+306)",
        ),
        (["data=csv", "data.path=huge.csv", "data.target=label", "model=mlp"], "values too large to train on in x2 (up to 4e+306)"),
        (
            ["debug=fast_dev_run", "logger.tracking_uri=sqlite:///x.db"],
            "logger.tracking_uri: not in this config: tracking is off here (a preset such as debug=fast_dev_run sets logger=none); "
            "add logger=mlflow to keep it",
        ),
        (["data=csv", "data.path=/dev/zero", "data.target=y"], "data.path=/dev/zero: not a regular file (a device, pipe or socket)"),
    ],
)
def test_bad_input_one_line_and_nothing_running(args: list[str], expected: str, tmp_path: Path) -> None:
    _csv(tmp_path)
    _bad_checkpoints(tmp_path)
    (tmp_path / "afile").write_text("a file where a folder is needed")
    started = time.time()
    result = cli([*args, "callbacks=none", "trainer.max_epochs=1"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout[-1000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("sweeplab-train: error: "), result.stderr[-2000:]
    assert expected in lines[-1]
    assert "Traceback" not in result.stderr and "weights_only` set to `False`" not in result.stderr
    assert "Please file an issue" not in result.stderr and "UserWarning" not in result.stderr
    assert time.time() - started < 60  # an unreachable server fails in seconds, not minutes
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        assert "RUNNING" not in set(runs_of(f"sqlite:///{db}").status)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["data=csv", "data.path=empty.csv", "data.target=y"], "data.path=empty.csv: the file is empty"),
        (["data=csv", "data.path=header_only.csv", "data.target=label"], "has a header but no rows"),
        (["data=csv", "data.path=malformed.csv", "data.target=a"], "not a readable csv file"),
        (
            ["data=csv", "data.path=nan.csv", "data.target=label"],
            "missing or infinite values in x2; set data.missing=drop, mean, median or zero",
        ),
        (["data=csv", "data.path=text.csv", "data.target=label", "data.categorical=error"], "non-numeric feature columns colour"),
        (["data=csv", "data.path=text.csv", "data.target=label", "data.task=binary"], "data.task=binary but column 'label' has 3 classes"),
        (["data.val_fraction=0.5", "data.test_fraction=0.45"], "must leave at least 10% for training"),
        (["model=cnn", "data=iris"], "model=cnn needs image-shaped samples"),
        (["loss=bce"], "loss=BCEWithLogitsLoss does not fit the run's multiclass task"),
        (["ckpt_path=nowhere.ckpt"], "ckpt_path=nowhere.ckpt: no such file"),
        (["scheduler=step", "scheduler.interval=batch"], "scheduler.interval='batch': choose epoch or step"),
        (["model.activation=swishy"], "model.activation='swishy': choose one of relu"),
        (["monitor_mode=maximum"], "monitor_mode='maximum': choose min or max"),
        (["seed=-1"], "seed=-1: must be an integer from 0 to 4294967295"),
        (["data.val_fraction=abc"], "data.val_fraction='abc': must be a number in (0, 1)"),
        (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number > 0"),
        (["optimizer.lr=1e999"], "optimizer.lr=inf: must be a finite number > 0"),
        (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum=-1: must be a number in [0, inf)"),
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0: must be a positive integer"),
        (["scheduler=multistep", "scheduler.milestones=[8,5]"], "scheduler.milestones=[8, 5]: must be increasing positive integers"),
        (["param_groups=[{params: '(', lr: 0.1}]"], "param_groups[0].params='(': not a valid regular expression"),
        (["logger.tracking_uri=garbage://x"], "logger.tracking_uri=garbage://x: unknown scheme; use sqlite:///"),
        (["trainer.accelerator=cpu", "trainer.devices=3"], "trainer.devices=3: on the CPU that means 3 training processes (DDP)"),
        (
            ["data=csv", "data.path=onemember.csv", "data.target=label"],
            "needs at least 3 samples of every class; too few of 1 of the 3 classes: c",
        ),
        (["ckpt_path=random.ckpt"], "refuses, on purpose, to load it with weights_only=False"),
        (["ckpt_path=bare.ckpt"], "a bare state dict, not a checkpoint Lightning wrote"),
        ([f"run_name={'r' * 251}"], f"run_name='{'r' * 20}'... is 251 characters: MLflow keeps 250 at most"),
        ([f"experiment_name={'e' * 257}"], f"experiment_name='{'e' * 20}'... is 257 characters: MLflow keeps 256 at most"),
    ],
)
def test_bad_input_in_process_names_the_value_and_leaves_nothing_running(
    args: list[str], expected: str, tmp_path: Path, monkeypatch
) -> None:
    from sweeplab.errors import one_line

    monkeypatch.chdir(tmp_path)
    _csv(tmp_path)
    _bad_checkpoints(tmp_path)
    with pytest.raises(Exception) as raised:
        train_in_process([*args, "callbacks=none", "trainer.max_epochs=1"], tmp_path / "run")
    assert expected in one_line(raised.value)
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        assert "RUNNING" not in set(runs_of(f"sqlite:///{db}").status)


# -- the store under concurrent writers ------------------------------------------


@pytest.mark.slow
def test_a_crashing_writer_does_not_hurt_the_others(tmp_path: Path) -> None:
    first = cli(["trainer.max_epochs=1", "callbacks=none"], cwd=tmp_path)  # creates the store
    assert first.returncode == 0, first.stderr[-2000:]
    victim = _start(SLOW_RUN, tmp_path, hold=1)
    survivor = _start(["trainer.max_epochs=3", "callbacks=none", "data=wine"], tmp_path)
    _held(tmp_path)
    victim.kill()
    victim.communicate(timeout=60)
    _, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err[-2000:]
    with sqlite3.connect(tmp_path / "outputs" / "mlflow.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    runs = runs_of(_store(tmp_path))
    assert sorted(runs.status) == ["FINISHED", "FINISHED", "RUNNING"]
    survivor_run = runs[runs["tags.mlflow.runName"].str.contains("data=wine", na=False)].iloc[0]
    assert survivor_run["metrics.test/f1"] > 0


# -- servers bind to loopback ----------------------------------------------------------


def test_ui_binds_loopback_unless_told(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "mlflow"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    exe = Path(sys.executable).with_name("sweeplab")
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    default = subprocess.run([str(exe), "ui"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert "--host 127.0.0.1" in default.stdout
    named = subprocess.run([str(exe), "ui", "--host", "0.0.0.0"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert "--host 0.0.0.0" in named.stdout


def test_resume_with_another_config_is_refused_before_the_run_is_touched(store, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    train_in_process(["trainer.max_epochs=1", *store_overrides(store)], tmp_path / "run")
    run_id = runs_of(store["uri"]).run_id[0]
    MlflowClient(store["uri"]).set_terminated(run_id, "KILLED")  # as an interrupted run is left
    with pytest.raises(ValueError, match=rf"resume={run_id}: that run was trained with another config; repeat its overrides"):
        train_in_process(["trainer.max_epochs=1", "optimizer=sgd", f"resume={run_id}", *store_overrides(store)], tmp_path / "run2")
    assert runs_of(store["uri"]).status[0] == "KILLED"


def _with_file_size_limit(limit: int):
    """A child process whose writes past ``limit`` bytes fail as on a full disk (EFBIG instead of ENOSPC)."""
    import resource

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_full_disk_for_checkpoints_and_for_the_store_is_one_line_and_leaves_no_broken_file(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    wide = ["trainer.max_epochs=2", "callbacks.progress_bar=null", "model.hidden_sizes=[512,512]"]
    # Checkpoints (about 3.6 MB with Adam's state) do not fit; the store (about 1 MB) does.
    result = subprocess.run(
        [exe, *wide], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, preexec_fn=_with_file_size_limit(2_500_000)
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "could not be written (File too large: a full disk?)" in lines[0]
    folder = next(tmp_path.glob("outputs/runs/*/*/checkpoints"))
    assert list(folder.iterdir()) == []  # no truncated best/last/interrupted.ckpt, no temporary file
    run = runs_of(_store(tmp_path)).iloc[0]
    assert run["status"] == "FAILED" and "could not be written" in run["tags.sweeplab.error"]
    # resume=auto is not blocked by anything broken: it finds nothing to resume and trains afresh.
    again = cli([*wide, "resume=auto"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]

    # The store itself full: its size now, plus a few pages.
    db = tmp_path / "outputs" / "mlflow.db"
    result = subprocess.run(
        [exe, "trainer.max_epochs=30", "callbacks=none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=_with_file_size_limit(db.stat().st_size + 8192),
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("sweeplab-train: error: the MLflow store could not be written")


JOBLIB_SWEEP = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SLOW_RUN, "seed=1,2"]


def _two_runs_training(cwd: Path) -> list[int]:
    """Wait until both jobs of the sweep are held in training; their worker pids."""
    return [int(marker.name.removeprefix("held-")) for marker in _held(cwd, count=2)]


@pytest.mark.slow
def test_ctrl_c_on_a_joblib_sweep_ends_every_run_in_flight_killed(tmp_path: Path) -> None:
    proc = _start(JOBLIB_SWEEP, tmp_path, hold=1, start_new_session=True)
    _two_runs_training(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr[-2000:]
    runs = runs_of(_store(tmp_path))
    assert sorted(runs.status) == ["KILLED", "KILLED"], runs[["status", "tags.sweeplab.error"]]
    assert all(runs["tags.sweeplab.error"])
    assert list(sweeps_of(_store(tmp_path)).status) == ["KILLED"]  # the sweep's own run ends with its jobs


@pytest.mark.slow
def test_workers_of_a_sweep_whose_parent_is_killed_close_their_runs_and_exit(tmp_path: Path) -> None:
    proc = _start(JOBLIB_SWEEP, tmp_path, hold=1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    workers = _two_runs_training(tmp_path)
    proc.kill()  # SIGKILL of the parent alone: no handler of its runs
    proc.wait()
    deadline = time.time() + 90
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers)
    runs = runs_of(_store(tmp_path))
    assert sorted(runs.status) == ["KILLED", "KILLED"]
    assert set(runs["tags.sweeplab.error"]) == {"Interrupted: interrupted by SIGTERM"}
    assert list(sweeps_of(_store(tmp_path)).status) == ["KILLED"]  # closed by the workers that outlived it


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_an_idle_worker_of_a_sweep_whose_parent_is_killed_closes_the_sweeps_run_and_exits(tmp_path: Path) -> None:
    """One job finished (its worker waits for more), the other held; the parent and the busy
    worker are SIGKILLed: only the idle worker is left to close the sweep's run."""
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SLOW_RUN, "trainer.max_epochs=1,4"]
    proc = _start(sweep, tmp_path, hold=1, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    busy = int(_held(tmp_path)[0].name.removeprefix("held-"))
    deadline = time.time() + 120
    while time.time() < deadline and "FINISHED" not in list((runs := runs_of(_store(tmp_path))).status):
        time.sleep(0.2)
    idle = int(runs[runs.status == "FINISHED"]["tags.sweeplab.pid"].iloc[0])  # the worker of the finished job
    assert idle != busy and _alive(idle)
    os.kill(busy, signal.SIGKILL)
    proc.kill()
    proc.wait()
    deadline = time.time() + 60
    while _alive(idle) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(idle)
    assert list(sweeps_of(_store(tmp_path)).status) == ["KILLED"]


def test_ctrl_c_after_the_run_is_closed_exits_130_without_a_traceback(tmp_path: Path) -> None:
    """Once a run is FINISHED the console script swaps in a handler that only
    ends the process: a late Ctrl-C used to exit 0 with a KeyboardInterrupt
    traceback from interpreter shutdown."""
    code = (
        "import os, signal, time, atexit\n"
        "from sweeplab import signals\n"
        "signals.take_over()\n"
        "signals.exit_on_late_signal()\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))\n"  # Ctrl-C during shutdown
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_unlimited_epochs_are_refused_unless_something_ends_the_run(tmp_path: Path) -> None:
    """Lightning reads max_epochs=-1 as no limit: such a run used to train until killed."""
    result = cli(["trainer.max_epochs=-1"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("sweeplab-train: error: trainer.max_epochs=-1: trains without end unless something stops it") and "max_time" in line
    )
    assert not (tmp_path / "outputs" / "mlflow.db").exists() or runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").empty
    from sweeplab.config import check_config, compose

    for bounded in (["+trainer.max_time=00:00:00:30"], ["+trainer.max_steps=100"], ["callbacks=early_stopping"]):
        check_config(compose(["trainer.max_epochs=-1", *bounded], run_dir=tmp_path / "run"))  # accepted


def _sweeplab(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sweeplab")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_sync_names_a_missing_folder_and_a_damaged_record(tmp_path: Path) -> None:
    missing = _sweeplab(["sync", str(tmp_path / "nowhere")], tmp_path)
    assert missing.returncode == 1
    assert (
        missing.stderr.strip().splitlines()[-1]
        == f"sweeplab: error: {tmp_path / 'nowhere'}: no such run folder (give the folder the training command printed)"
    )
    run = tmp_path / "run"
    run.mkdir()
    for damaged in ('{"run_id": "abc",\n', "[1, 2]", "\xff\xfe"):
        (run / "unsynced.json").write_text(damaged, errors="surrogateescape")
        result = _sweeplab(["sync", str(run)], tmp_path)
        assert result.returncode == 1
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"sweeplab: error: {run / 'unsynced.json'}: not a record sweeplab wrote (") and "nothing was sent" in line, (
            line
        )


@pytest.mark.slow
def test_ui_on_a_port_in_use_says_so_and_prints_no_url(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _sweeplab(["ui", "--port", str(port), "--store", f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path)
    assert result.returncode == 1
    assert "MLflow UI for" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith(f"sweeplab: error: --port {port}: 127.0.0.1:{port} is already in use")


@pytest.mark.slow
def test_a_store_of_unknown_scheme_is_named_by_every_command(tmp_path: Path) -> None:
    for command in (["runs", "--store", "garbage://x"], ["compare", "--store", "garbage://x"]):
        result = _sweeplab(command, tmp_path)
        assert result.returncode == 1, command
        assert result.stderr.strip().splitlines()[-1].startswith("sweeplab: error: --store garbage://x: unknown scheme; use sqlite:///")
    exe = Path(sys.executable).with_name("sweeplab-eval")
    evaluated = subprocess.run([str(exe), "0123abcd", "--store", "garbage://x"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 1
    assert "--store garbage://x: unknown scheme" in evaluated.stderr.strip().splitlines()[-1]


def test_a_target_with_hundreds_of_rare_classes_is_named_in_one_short_line(tmp_path: Path, monkeypatch) -> None:
    from sweeplab.errors import one_line

    rows = "".join(f"{i},class_{i % 500}\n" for i in range(600))  # 500 classes, most with one sample
    (tmp_path / "many.csv").write_text("x,label\n" + rows)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as raised:
        train_in_process(
            ["data=csv", "data.path=many.csv", "data.target=label", "callbacks=none", "trainer.max_epochs=1"], tmp_path / "run"
        )
    line = one_line(raised.value)
    assert "too few of 500 of the 500 classes: class_0, class_1" in line and "and 490 more" in line
    assert len(line) < 600


@pytest.mark.slow
def test_a_full_disk_while_a_new_store_is_made_leaves_nothing_and_a_cut_short_store_is_named(tmp_path: Path) -> None:
    """A file-size limit while the store is created used to leave a truncated mlflow.db (and a
    .partial) on which every later run failed: "table secrets already exists"."""
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # no cached empty store: MLflow's migrations run under the limit
    args = [exe, "trainer.max_epochs=1", "callbacks=none", *NO_MODEL]
    full = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env, preexec_fn=_with_file_size_limit(500 * 1024)
    )
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert full.returncode == 1 and lines[-1].startswith("sweeplab-train: error: the MLflow store "), full.stderr[-2000:]
    assert "could not be created (" in lines[-1] and "nothing was left behind" in lines[-1]
    outputs = tmp_path / "outputs"
    assert not list(outputs.glob("mlflow.db*")) and not list(outputs.glob(".mlflow.db*"))
    assert [p.name for p in (tmp_path / "cache" / "sweeplab").iterdir() if not p.name.endswith(".lock")] == []
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    # A store an earlier version let MLflow create in place, cut short: named, with the way out.
    half = tmp_path / "half"
    (half / "outputs").mkdir(parents=True)
    make = "from mlflow.tracking import MlflowClient\ntry:\n    MlflowClient('sqlite:///outputs/mlflow.db').search_experiments()\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", make], cwd=half, env=env, timeout=120, preexec_fn=_with_file_size_limit(500 * 1024))
    refused = subprocess.run(args, cwd=half, capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 1
    assert "the MLflow store's creation was cut short earlier (table " in refused.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_downloading_weights_offline_is_one_line_at_once(tmp_path: Path) -> None:
    """Offline, from_pretrained retried for about a minute with a warning at each try before its line."""
    started = time.time()
    result = cli(
        ["model=bert", "model.download_weights=true", "model.weights=bert-base-uncased", "data=sentiment"],
        cwd=tmp_path,
        timeout=120,
        env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")},  # a closed port: the hub is unreachable
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "sweeplab-train: error: model.weights=bert-base-uncased with model.download_weights=true: the Hugging Face hub cannot be "
        "reached from here (offline?) and no copy is in the local cache; download it where there is a network, or give "
        "model.weights=<folder>"
    )
    assert "retry" not in result.stderr.lower() and "Warning" not in result.stderr
    assert time.time() - started < 30


@pytest.mark.slow
def test_sigkill_between_an_epochs_checkpoint_and_its_metric_write_loses_no_point_on_resume(tmp_path: Path) -> None:
    """The epoch's last.ckpt is on disk when its values are written: a process killed in between used to
    resume from that checkpoint with the epoch's train/val/lr points missing for good."""
    args = ["trainer.max_epochs=4", "callbacks.progress_bar=null", "+callbacks.kill._target_=signal_callbacks.KillInEpochWrite", *NO_MODEL]
    env = {**_hold_env(tmp_path, None), "SWEEPLAB_TEST_KILL_EPOCH": "2"}
    exe = Path(sys.executable).with_name("sweeplab-train")
    killed = subprocess.run([str(exe), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    uri = _store(tmp_path)
    run_id = runs_of(uri).run_id[0]
    client = MlflowClient(uri)
    assert len(client.get_metric_history(run_id, "val/loss")) == 2  # epochs 0 and 1 only: epoch 2's write never happened
    resumed = subprocess.run(
        [str(exe), *args, "resume=auto"], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_hold_env(tmp_path, None)
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "values of the checkpoint's epoch were not in the run; logged them" in resumed.stdout
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and len(runs_of(uri)) == 1
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert len(steps) == 4 and len(set(steps)) == 4, steps  # every epoch's point, once
    for key in ("val/loss", "val/f1", "lr"):  # at the same steps as Lightning writes them
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == steps, key
    epochs = {m.step: m.value for m in client.get_metric_history(run_id, "epoch")}  # the test stage adds one more
    assert [epochs[step] for step in steps] == [0.0, 1.0, 2.0, 3.0]


def test_params_are_whole_and_a_resumed_runs_params_keep_their_values(tmp_path: Path) -> None:
    """Params up to MLflow's 6000 characters (Lightning's logger cut them at 250), and a run resumed
    from an older record keeps the values it has: MLflow refuses to change a param."""
    from mlflow.tracking import MlflowClient

    from sweeplab.record.tracking import log_params

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    client.log_param(run_id, "data.path", "p" * 250)  # as a run made before was cut
    log_params(client, run_id, {"data": {"path": "p" * 300}, "model": {"hidden_sizes": [7] * 200}, "note": "n" * 7000})
    params = client.get_run(run_id).data.params
    assert params["data.path"] == "p" * 250 and params["model.hidden_sizes"] == str([7] * 200)
    assert len(params["note"]) == 6000 and params["note"].endswith("n…")
    # Params it has already, and no tags: nothing is written (Lightning's log_hyperparams on such a run).
    writes = []
    client.log_batch = lambda *args, **kwargs: writes.append((args, kwargs))
    log_params(client, run_id, {"data": {"path": "p" * 300}})
    assert writes == []
    log_params(client, run_id, {}, tags={"sweeplab.task": "classification"})
    assert len(writes) == 1 and [t.key for t in writes[0][1]["tags"]] == ["sweeplab.task"]


# Where MLflow turns its telemetry off by itself (mlflow.telemetry.utils._is_ci_env_or_testing).
CI_VARIABLES = (
    "PYTEST_CURRENT_TEST GITHUB_ACTIONS CI CIRCLECI GITLAB_CI JENKINS_URL TRAVIS TF_BUILD BITBUCKET_BUILD_NUMBER "
    "CODEBUILD_BUILD_ARN BUILDKITE TEAMCITY_VERSION CLOUD_RUN_EXECUTION RUNBOT_HOST_URL RUNBOT_BUILD_NAME RUNBOT_WORKER_ID"
).split()
# Loaded by the run's interpreter: each host name it resolves is written down, and refused as offline.
NETWORK_PROBE = """
import os, socket
_resolve = socket.getaddrinfo
def _noted(host, *args, **kwargs):
    if host not in (None, "localhost", "127.0.0.1", "::1", "") and not str(host).startswith("/"):
        with open(os.environ["SWEEPLAB_TEST_HOSTS"], "a") as out:
            out.write(f"{host}\\n")
        raise socket.gaierror(socket.EAI_NONAME, "offline")
    return _resolve(host, *args, **kwargs)
socket.getaddrinfo = _noted
"""


@pytest.mark.cold_process  # the probe loads at interpreter start (sitecustomize)
def test_a_run_resolves_no_host_name_outside_ci(tmp_path: Path) -> None:
    """A training run makes no network call: MLflow's usage telemetry (a config fetch at its import,
    events posted from a thread) is off in sweeplab's processes, where MLflow would have it on (no CI
    variable set). A user who sets MLFLOW_DISABLE_TELEMETRY=false gets it back, which also shows the probe sees it."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "sitecustomize.py").write_text(NETWORK_PROBE)
    hosts = tmp_path / "hosts.txt"
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES and k != "MLFLOW_DISABLE_TELEMETRY"}
    env.update(PYTHONPATH=str(tmp_path / "probe"), SWEEPLAB_TEST_HOSTS=str(hosts))
    args = ["trainer.max_epochs=1", "print_config=false", *NO_MODEL]
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    result = subprocess.run([exe, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not hosts.exists(), hosts.read_text()
    env["MLFLOW_DISABLE_TELEMETRY"] = "false"
    result = subprocess.run([exe, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert hosts.exists() and "mlflow" in hosts.read_text(), hosts.read_text() if hosts.exists() else "no host resolved"

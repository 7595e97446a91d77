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

from conftest import cli, runs_of, store_overrides, train_in_process

SLOW_RUN = ["data=moons", "data.n_samples=60000", "trainer.max_epochs=4", "callbacks.progress_bar=null"]


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([str(exe), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


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
    proc = _start(SLOW_RUN, tmp_path)
    ckpt = _wait_for("outputs/runs/*/*/checkpoints/last.ckpt", tmp_path)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    runs = runs_of(_store(tmp_path))
    assert list(runs.status) == ["KILLED"]
    assert (ckpt.parent / "interrupted.ckpt").exists() and ckpt.exists()
    assert "add resume=auto to the same command" in stderr
    assert runs["tags.sweeplab.error"][0]
    if signum == signal.SIGINT:  # resumed to the end, the run no longer carries the interruption's error
        assert cli([*SLOW_RUN, "resume=auto"], cwd=tmp_path).returncode == 0
        after = runs_of(_store(tmp_path))
        assert list(after.status) == ["FINISHED"] and "sweeplab.error" not in MlflowClient(_store(tmp_path)).get_run(after.run_id[0]).data.tags


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_run(tmp_path: Path) -> None:
    proc = _start(SLOW_RUN, tmp_path)
    _wait_for("outputs/runs/*/*/checkpoints/last.ckpt", tmp_path)
    time.sleep(0.5)
    proc.kill()  # SIGKILL: no handler runs, the MLflow run stays RUNNING
    proc.communicate(timeout=60)
    before = runs_of(_store(tmp_path))
    assert list(before.status) == ["RUNNING"]

    result = cli([*SLOW_RUN, "resume=auto"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming MLflow run {before.run_id[0]}" in result.stdout
    after = runs_of(_store(tmp_path))
    assert list(after.run_id) == list(before.run_id)  # the same run, not a new one
    assert list(after.status) == ["FINISHED"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_store(tmp_path))
    for key in ("val/loss", "train/loss", "train/accuracy", "val/f1"):
        steps = [m.step for m in client.get_metric_history(after.run_id[0], key)]
        assert len(steps) == 4 and len(set(steps)) == 4, (key, steps)  # every epoch once
    assert "test/f1" in client.get_run(after.run_id[0]).data.metrics


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

    from sweeplab.checkpoints import load_checkpoint

    path = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_checkpoint(path)


def test_training_can_start_from_a_checkpoint(store, tmp_path: Path) -> None:
    train_in_process(["trainer.max_epochs=2", *store_overrides(store)], tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / "last.ckpt"
    metrics = train_in_process([f"ckpt_path={ckpt}", "trainer.max_epochs=3", *store_overrides(store)], tmp_path / "second")
    assert metrics["test/accuracy"] > 0.5


# -- bad input through the CLI: one line, non-zero, nothing RUNNING -------------

def _csv(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty": "",
        "header_only": "a,b,label\n",
        "malformed": 'a,b\n1,2\n3,4,5,6\n"unterminated\n',
        "nan": "x1,x2,label\n1,,0\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)),
        "text": "x1,colour,label\n" + "".join(f"{i},{'red' if i % 3 else 'blue'},{i % 3}\n" for i in range(40)),
        "onemember": "x,label\n" + "".join(f"{i},{'a' if i % 2 else 'b'}\n" for i in range(30)) + "99,c\n",
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


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (["data=csv", "data.path=missing.csv", "data.target=y"], "data.path=missing.csv: no such file"),
        (["data=csv", "data.path=empty.csv", "data.target=y"], "data.path=empty.csv: the file is empty"),
        (["data=csv", "data.path=header_only.csv", "data.target=label"], "has a header but no rows"),
        (["data=csv", "data.path=malformed.csv", "data.target=a"], "not a readable csv file"),
        (["data=csv", "data.path=text.csv", "data.target=lbl"], "data.target='lbl': no such column in text.csv; columns: x1, colour, label"),
        (["data=csv", "data.path=nan.csv", "data.target=label"], "missing or infinite values in x2; set data.missing=drop, mean, median or zero"),
        (["data=csv", "data.path=text.csv", "data.target=label", "data.categorical=error"], "non-numeric feature columns colour"),
        (["data=csv", "data.path=text.csv", "data.target=label", "data.task=binary"], "data.task=binary but column 'label' has 3 classes"),
        (["data=csv"], "data.path is required and has no value"),
        (["data.val_fraction=0.5", "data.test_fraction=0.45"], "must leave at least 10% for training"),
        (["optimizer.lr=0"], "optimizer.lr=0: must be a finite number > 0"),
        (["trainer.precision=16-mixed", "trainer.accelerator=cpu"], "trainer.precision=16-mixed: the CPU has no float16 mixed precision"),
        (["model=cnn", "data=iris"], "model=cnn needs image-shaped samples"),
        (["loss=bce"], "loss=BCEWithLogitsLoss does not fit the run's multiclass task"),
        (["model=kmeans", "data=diabetes"], "model=kmeans is a clustering model"),
        (["logger.tracking_uri=http://127.0.0.1:9"], "logger.tracking_uri=http://127.0.0.1:9: no MLflow server answers there"),
        (["ckpt_path=nowhere.ckpt"], "ckpt_path=nowhere.ckpt: no such file"),
        (["resume=0123456789abcdef"], "resume=0123456789abcdef: no such MLflow run"),
        (["paths.outputs=afile/sub"], "afile"),
        (["scheduler=step", "scheduler.interval=batch"], "scheduler.interval='batch': choose epoch or step"),
        (["model.activation=swishy"], "model.activation='swishy': choose one of relu"),
        (["monitor_mode=maximum"], "monitor_mode='maximum': choose min or max"),
        (["seed=abc"], "seed='abc': must be an integer from 0 to 4294967295"),
        (["seed=-1"], "seed=-1: must be an integer from 0 to 4294967295"),
        (["data.val_fraction=abc"], "data.val_fraction='abc': must be a number in (0, 1)"),
        (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number > 0"),
        (["optimizer.lr=1e999"], "optimizer.lr=inf: must be a finite number > 0"),
        (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum=-1: must be a number in [0, inf)"),
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0: must be a positive integer"),
        (["scheduler=multistep", "scheduler.milestones=[8,5]"], "scheduler.milestones=[8, 5]: must be increasing positive integers"),
        (["param_groups=[{params: '(', lr: 0.1}]"], "param_groups[0].params='(': not a valid regular expression"),
        (["experiment=nope"], "experiment=nope: no such preset; choose one of autoencoder_vs_pca, clustering_digits"),
        (["logger.tracking_uri=garbage://x"], "logger.tracking_uri=garbage://x: unknown scheme; use sqlite:///"),
        (["trainer.accelerator=cpu", "trainer.devices=3"], "trainer.devices=3: on the CPU that means 3 training processes (DDP)"),
        (["data=csv", "data.path=onemember.csv", "data.target=label"], "needs at least 3 samples of every class; too few of: c"),
        (["ckpt_path=plain.ckpt"], "refuses, on purpose, to load it with weights_only=False"),
        (["ckpt_path=random.ckpt"], "refuses, on purpose, to load it with weights_only=False"),
        (["ckpt_path=bare.ckpt"], "a bare state dict, not a checkpoint Lightning wrote"),
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
    assert time.time() - started < 60  # an unreachable server fails in seconds, not minutes
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        assert "RUNNING" not in set(runs_of(f"sqlite:///{db}").status)


# -- the store under concurrent writers ------------------------------------------

@pytest.mark.slow
def test_a_crashing_writer_does_not_hurt_the_others(tmp_path: Path) -> None:
    first = cli(["trainer.max_epochs=1", "callbacks=none"], cwd=tmp_path)  # creates the store
    assert first.returncode == 0, first.stderr[-2000:]
    victim = _start(SLOW_RUN, tmp_path)
    survivor = _start(["trainer.max_epochs=3", "callbacks=none", "data=wine"], tmp_path)
    _wait_for("outputs/runs/*/*/checkpoints/last.ckpt", tmp_path)
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
    fake.write_text("#!/bin/sh\necho \"$@\"\n")
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

"""Provenance tags: code version, command, software, device, data split."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import cli, runs_of, store_overrides, train_in_process


def _committed_repository(folder: Path) -> Callable[..., str]:
    """A git repository in ``folder`` on branch ``trial`` with notes.txt committed; its git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q", "-b", "trial")
    (folder / "notes.txt").write_text("first\n")
    git("add", "notes.txt")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "start")
    return git


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_runs_record_commit_dirty_diff_command_versions_device_and_split(tmp_path: Path) -> None:
    git = _committed_repository(tmp_path)
    (tmp_path / "notes.txt").write_text("first\nchanged\n")  # uncommitted

    result = cli(["trainer.max_epochs=1", "callbacks=none", "model=linear", "+tags.api_key=s3cr3t-value"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").iloc[0]
    assert run["tags.mlflow.source.git.commit"] == git("rev-parse", "HEAD")
    assert run["tags.mlflow.source.git.branch"] == "trial"
    assert run["tags.sweeplab.git_dirty"] == "true"
    assert run["tags.sweeplab.command"] == "sweeplab-train trainer.max_epochs=1 callbacks=none model=linear +tags.api_key=***"
    assert run["tags.sweeplab.device"] == "cpu"
    import torch

    assert run["tags.sweeplab.torch"] == torch.__version__ and run["tags.sweeplab.python"]
    from importlib.metadata import version

    assert run["tags.sweeplab.lightning"] == version("lightning")
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").list_artifacts(run["run_id"])}
    assert "git_diff.patch" in artifacts
    assert "+changed" in next(tmp_path.glob("outputs/runs/*/*/git_diff.patch")).read_text()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_is_read_once_a_sweep_and_process_and_anew_for_each_single_run(tmp_path: Path, monkeypatch) -> None:
    """A process runs the code it imported: its sweep's later jobs record the state its first job
    read (three git processes a job were 15 ms of a fused job's set-up); single runs read it anew."""
    from sweeplab.record import provenance

    _committed_repository(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(provenance, "_states", {})
    assert provenance.git_root() == tmp_path.resolve()  # looked up once a folder, before the calls counted
    calls: list[tuple[str, ...]] = []
    real = provenance._git
    monkeypatch.setattr(provenance, "_git", lambda *args, cwd: calls.append(args) or real(*args, cwd=cwd))

    def job(sweep: str | None) -> tuple[dict[str, str], Path | None]:  # as a run reads it: once, for its tags and diff
        state = provenance.git_state(sweep)
        return provenance.creation_tags(["sweeplab-train"], state), provenance.write_diff(tmp_path, state)

    first, diff = job("s1")
    assert first["sweeplab.git_dirty"] == "false" and diff is None
    assert len(calls) == 2  # commit and status: a clean tree has no diff to ask for
    (tmp_path / "notes.txt").write_text("first\nchanged\n")
    assert job("s1") == (first, None) and len(calls) == 2  # the same sweep's next job
    tags, diff = job(None)  # a single run
    assert tags["sweeplab.git_dirty"] == "true" and "+changed" in diff.read_text() and len(calls) == 5
    assert job("s2")[0]["sweeplab.git_dirty"] == "true"  # another sweep


def test_the_data_split_fingerprint_follows_the_split(store, tmp_path: Path) -> None:
    base = ["trainer.max_epochs=1", "callbacks=none", "model=linear", *store_overrides(store)]
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train_in_process([*base, f"seed={seed}", f"run_name={name}"], tmp_path / name)
    runs = runs_of(store["uri"]).set_index("tags.mlflow.runName")["tags.sweeplab.data_split"]
    assert runs["a"] == runs["b"] != runs["c"]  # the seed draws the split


def test_a_password_in_a_uri_on_the_command_line_is_masked_in_tags() -> None:
    from sweeplab.redact import mask_override

    assert mask_override("logger.tracking_uri=http://ana:pw@host:5000") == "logger.tracking_uri=http://ana:***@host:5000"
    assert mask_override("+api_key=abc") == "+api_key=***" and mask_override("seed=3") == "seed=3"


def test_each_split_is_an_mlflow_dataset_input_with_the_splits_digest(store, tmp_path: Path) -> None:
    from conftest import FAST

    table = tmp_path / "table.csv"
    table.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{i % 2}\n" for i in range(60)))
    for name, extra in (("one", ["seed=1"]), ("same", ["seed=1"]), ("other", ["seed=2"])):
        train_in_process(
            ["data=csv", f"data.path={table}", "data.target=y", *FAST, f"run_name={name}", *extra, *store_overrides(store)], tmp_path / name
        )
    client = MlflowClient(store["uri"])
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("sweeplab").experiment_id])}
    inputs = {name: {[t.value for t in d.tags][0]: d.dataset for d in r.inputs.dataset_inputs} for name, r in runs.items()}
    assert set(inputs["one"]) == {"train", "val", "test"}
    assert inputs["one"]["train"].source_type == "local" and str(table) in inputs["one"]["train"].source
    assert all(inputs["one"][s].digest == inputs["same"][s].digest for s in ("train", "val", "test"))  # same split, same digest
    assert inputs["one"]["test"].digest != inputs["other"]["test"].digest  # another seed draws another split


def _log_the_same_split(uri: str, experiment_id: str, barrier: Any, results: Any) -> None:
    """What a run records of its data (provenance.record), the data module a stand-in with one split."""
    from types import SimpleNamespace

    from sweeplab.record import provenance

    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id).info.run_id
    rows = (np.zeros((3, 2)), np.zeros(3))
    datamodule = SimpleNamespace(
        splits={"train": rows, "val": rows, "test": rows}, ids={"train": [0, 1, 2], "val": [3, 4, 5], "test": [6, 7, 8]}
    )
    barrier.wait()
    try:
        provenance.record(client, run_id, SimpleNamespace(datamodule=datamodule), "digits", resumed=False)
        results.put("ok")
    except Exception as error:  # noqa: BLE001 - the parent reports it
        results.put(f"{type(error).__name__}: {str(error)[:200]}")


def test_runs_starting_together_share_a_split_without_a_duplicate_key_error(tmp_path: Path) -> None:
    """A sweep's jobs log the same split at the same moment; MLflow's
    look-up-then-insert let all but one fail with UNIQUE constraint failed
    (4 processes: 3 of 4 rounds failed before). Forked, so the race is tight."""
    import multiprocessing

    from sweeplab.record.tracking import _use_wal, new_sqlite_store

    fork = multiprocessing.get_context("fork")
    for round_ in range(3):
        db = tmp_path / f"round{round_}.db"
        new_sqlite_store(db)
        _use_wal(db)
        uri = f"sqlite:///{db}"
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("sweep")
        barrier, results = fork.Barrier(4), fork.Queue()
        workers = [fork.Process(target=_log_the_same_split, args=(uri, experiment_id, barrier, results)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [results.get(timeout=5) for _ in workers] == ["ok"] * 4
        runs = client.search_runs([experiment_id])
        assert len(runs) == 4 and all(len(run.inputs.dataset_inputs) == 3 for run in runs)
        assert len({tuple(sorted(d.dataset.digest for d in run.inputs.dataset_inputs)) for run in runs}) == 1

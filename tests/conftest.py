"""Shared fixtures: every test gets its own outputs folder and MLflow store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ["trainer.max_epochs=1", "callbacks=none"]


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """Overrides that put the outputs and the SQLite store in tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return {"outputs": str(tmp_path), "uri": uri}


@pytest.fixture(autouse=True)
def _no_ambient_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def store_overrides(store: dict[str, str]) -> list[str]:
    """The default store is <paths.outputs>/mlflow.db, so moving outputs moves it."""
    return [f"paths.outputs={store['outputs']}"]


def train_in_process(overrides: list[str], run_dir: Path) -> dict[str, float]:
    """Compose like the CLI does and run, in this process (fast: imports are paid once)."""
    from sweeplab.config import compose
    from sweeplab.train import run

    return run(compose(overrides, run_dir=run_dir))


def cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script the way a user does."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("sweeplab-train")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def runs_of(uri: str, experiment: str = "sweeplab"):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])

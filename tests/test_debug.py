"""debug= presets: check a config before spending compute on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import cli, runs_of, store_overrides, train_in_process


def test_fast_dev_run_runs_one_batch_and_tracks_nothing(store, tmp_path: Path) -> None:
    metrics = train_in_process(["debug=fast_dev_run", "model=cnn", *store_overrides(store)], tmp_path / "run")
    assert "test/accuracy" in metrics and "train/loss" in metrics
    assert not (tmp_path / "mlflow.db").exists()  # no tracking writes unless asked
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_overfit_drives_the_training_loss_to_about_zero(store, tmp_path: Path) -> None:
    """Lightning swaps in its own sampler for overfit_batches: the batch-at-once
    loader used to crash there (input batch 1 vs target batch 0)."""
    metrics = train_in_process(["debug=overfit", *store_overrides(store)], tmp_path / "run")
    assert metrics["train/loss"] < 0.05
    assert metrics["train/accuracy"] > 0.98  # measured with dropout on, in training mode


def test_limit_and_profiler_are_tracked_with_the_profile_as_an_artifact(store, tmp_path: Path) -> None:
    train_in_process(
        ["debug=profiler", "trainer.max_epochs=1", "+trainer.limit_train_batches=5", *store_overrides(store)], tmp_path / "run"
    )
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED"
    artifacts = {a.path for a in MlflowClient(store["uri"]).list_artifacts(run["run_id"])}
    assert "fit-profile.txt" in artifacts
    assert "run_training_batch" in (tmp_path / "run" / "fit-profile.txt").read_text()  # Lightning's action names

    metrics = train_in_process(["debug=limit", *store_overrides(store)], tmp_path / "limited")
    history = MlflowClient(store["uri"]).get_metric_history(runs_of(store["uri"]).iloc[0]["run_id"], "train/loss")
    assert [m.step for m in history] == [4, 9]  # 5 batches an epoch, 2 epochs (logged at the last step of each)
    assert "test/accuracy" in metrics


@pytest.mark.slow
def test_debug_presets_from_the_command_line(tmp_path: Path) -> None:
    result = cli(["debug=anomaly", "trainer.max_epochs=1", "callbacks=none"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")["params.trainer.detect_anomaly"][0] == "True"
    wrong = cli(["debug=fastdevrun"], cwd=tmp_path)
    assert wrong.returncode == 1
    assert "debug=fastdevrun: no such preset; choose one of anomaly, fast_dev_run, limit, overfit, profiler" in wrong.stderr

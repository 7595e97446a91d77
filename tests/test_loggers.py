"""logger=tensorboard, wandb (offline, no account) and many: the same metrics under the same names."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FAST, cli, runs_of, store_overrides, train_in_process

pytestmark = pytest.mark.slow


def tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_many_loggers_get_the_metrics_mlflow_gets(tmp_path: Path) -> None:
    result = cli(["logger=many", "trainer.max_epochs=2", "callbacks.progress_bar=null"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").iloc[0]
    assert run["status"] == "FINISHED"
    in_mlflow = {c.removeprefix("metrics.") for c in run.dropna().index if c.startswith("metrics.")}
    assert {"train/loss", "val/f1", "test/accuracy", "test/f1"} <= in_mlflow
    run_dir = Path(run["tags.sweeplab.run_dir"])
    assert tensorboard_tags(run_dir / "tensorboard") - {"epoch"} == in_mlflow - {"epoch"}
    import pandas as pd

    assert set(pd.read_csv(run_dir / "csv" / "metrics.csv").columns) - {"epoch", "step"} == in_mlflow - {"epoch"}


def test_tensorboard_alone_writes_events_and_no_store(store, tmp_path: Path) -> None:
    metrics = train_in_process(["logger=tensorboard", *FAST, *store_overrides(store)], tmp_path / "run")
    assert {k for k in metrics if k.startswith("test/")} <= tensorboard_tags(tmp_path / "run" / "tensorboard")
    assert not (tmp_path / "mlflow.db").exists()


def test_wandb_offline_needs_no_account(tmp_path: Path) -> None:
    result = cli(
        ["logger=wandb", "trainer.max_epochs=2", "callbacks.progress_bar=null"],
        cwd=tmp_path,
        env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_API_KEY": ""},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    logged = next(tmp_path.glob("outputs/runs/*/*/wandb/offline-run-*/run-*.wandb")).read_bytes()
    for key in (b"train/loss", b"val/f1", b"test/accuracy", b"test/f1"):  # the record names each metric as MLflow would
        assert key in logged, key
    assert not (tmp_path / "outputs" / "mlflow.db").exists()

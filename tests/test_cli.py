"""The console script as a user runs it: real processes, a temporary store."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli, runs_of, train_listing_imports

pytestmark = pytest.mark.slow


def test_default_run_prints_metrics_and_ui_command(tmp_path: Path) -> None:
    result = cli(["trainer.max_epochs=2"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for key in ("test/accuracy", "test/precision", "test/recall", "test/f1"):
        assert key in result.stdout
    db = tmp_path / "outputs" / "mlflow.db"
    assert f"mlflow ui --backend-store-uri sqlite:///{db}" in result.stdout
    runs = runs_of(f"sqlite:///{db}")
    assert list(runs.status) == ["FINISHED"]
    assert runs.iloc[0]["tags.mlflow.runName"] == "trainer.max_epochs=2"
    assert runs.iloc[0]["metrics.test/accuracy"] > 0.5


def test_multirun_lands_in_one_experiment_named_by_overrides(tmp_path: Path) -> None:
    args = ["-m", "optimizer=adam,sgd", "scheduler=none,step", "trainer.max_epochs=1", "callbacks=none"]
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert len(runs) == 4 and set(runs.status) == {"FINISHED"}
    names = set(runs["tags.mlflow.runName"])
    assert "optimizer=sgd,scheduler=step,trainer.max_epochs=1,callbacks=none" in names
    assert len(names) == 4
    assert runs["metrics.test/f1"].notna().all()
    # The config tree once, for the first job; each later job says its overrides and where its whole config is.
    assert result.stdout.count("config\n├── data") == 1
    said = [line for line in result.stdout.splitlines() if line.startswith("config: ")]
    assert len(said) == 3 and all(line.endswith("config.yaml)") for line in said)
    for line in said:
        folder = Path(line.rsplit("(all of it: ", 1)[1].removesuffix(")")).parent
        assert line.startswith(f"config: {runs.set_index('tags.sweeplab.run_dir').loc[str(folder), 'tags.mlflow.runName']} (")


def test_failed_run_in_sweep_does_not_stop_the_others(tmp_path: Path) -> None:
    result = cli(["-m", "loss=auto,mse", "trainer.max_epochs=1", "callbacks=none"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "run 1 failed: loss=MSELoss does not fit" in result.stderr
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert list(runs.status) == ["FINISHED"]  # the bad config failed before creating a run


@pytest.mark.parametrize(
    "args,expected",
    [
        (["optimizer=adamm"], "optimizer=adamm: no such option; valid choices: adadelta, adagrad, adam,"),
        (["optimizer.lrr=0.1"], "optimizer.lrr: no such config key; did you mean optimizer.lr?"),
        (["optimizer.lr=-0.5"], "optimizer.lr=-0.5: must be a finite number > 0"),
        (["data.batch_size=0"], "data.batch_size=0: must be a positive integer"),
        (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': must be a positive integer"),
        (["trainer.accelerator=gpu"], "trainer.accelerator=gpu: this machine has none; available here: cpu"),
        (
            ["data=imagenet"],
            "data=imagenet: no such option; valid choices: breast_cancer, cifar10, corpus, csv, diabetes, digits, fashion_mnist",
        ),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], expected: str, tmp_path: Path) -> None:
    import torch

    if "accelerator=gpu" in args[0] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = cli([*args, "callbacks=none"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("sweeplab-train: error: "), result.stderr
    assert expected in lines[-1]
    assert "Traceback" not in result.stderr
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        assert "RUNNING" not in set(runs_of(f"sqlite:///{db}").status)


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    result = cli(["optimizer.lr=-1"], cwd=tmp_path, env={"SWEEPLAB_DEBUG": "1"}, timeout=120)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=csv", "data.path=missing.csv", "data.target=y"], "missing.csv"),
        (["logger.tracking_uri=http://127.0.0.1:9"], "no MLflow server answers there"),
        (["trainer.precision=16-mixed"], "the CPU has no float16 mixed precision"),
        (
            ["trainer.precision=bf17"],
            "trainer.precision='bf17': not a precision Lightning knows; choose one of 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true",
        ),
        (["resume=0123456789abcdef"], "no such MLflow run"),
    ],
)
def test_bad_input_is_refused_before_lightning_is_imported(args: list[str], message: str, tmp_path: Path) -> None:
    """Config, data, device, server and run checks come first: the one line does not wait on Lightning's imports."""
    result, imported = train_listing_imports(args, tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert not imported & {"lightning", "torchmetrics", "torchvision"}


def test_the_precisions_checked_before_lightning_are_the_ones_lightning_takes() -> None:
    """The list a typo is checked against is Lightning's own: a precision Lightning adds or drops
    shows here, not as a good value refused or a bad one let through to the Trainer."""
    from typing import get_args

    from lightning.fabric.plugins.precision import precision as lightning_precision

    from sweeplab.config import PRECISION_ALIASES, PRECISIONS

    assert set(PRECISIONS) == set(get_args(lightning_precision._PRECISION_INPUT_STR))
    assert set(PRECISION_ALIASES) == set(get_args(lightning_precision._PRECISION_INPUT_STR_ALIAS))
    assert {str(p) for p in get_args(lightning_precision._PRECISION_INPUT_INT)} <= set(PRECISION_ALIASES)

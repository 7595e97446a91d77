"""sweeplab-eval reproduces a run's logged test metrics from its checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sweeplab.evaluate import evaluate

from conftest import runs_of, store_overrides, train_in_process


def test_train_then_eval_agree_exactly_and_log_to_the_same_run(store, tmp_path: Path) -> None:
    trained = train_in_process(["trainer.max_epochs=3", "data=wine", *store_overrides(store)], tmp_path / "run")
    run_id = runs_of(store["uri"]).run_id[0]
    again = evaluate(run_id, store=store["uri"])
    for key in ("test/accuracy", "test/precision", "test/recall", "test/f1", "test/loss"):
        assert again[key] == trained[key], key
    runs = runs_of(store["uri"])
    assert len(runs) == 1  # no stray evaluation run
    assert runs["metrics.eval/test/f1"][0] == trained["test/f1"]
    assert runs["tags.sweeplab.evaluated_ckpt"][0].endswith("best.ckpt")


def test_eval_from_a_checkpoint_path(store, tmp_path: Path) -> None:
    trained = train_in_process(["trainer.max_epochs=2", "model=cnn", *store_overrides(store)], tmp_path / "run")
    again = evaluate(str(tmp_path / "run" / "checkpoints" / "best.ckpt"), store=store["uri"])
    assert again["test/accuracy"] == trained["test/accuracy"]


@pytest.mark.slow
def test_eval_cli_bad_targets_are_one_line(store, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sweeplab-eval")
    train_in_process(["trainer.max_epochs=1", *store_overrides(store)], tmp_path / "run")
    loose = tmp_path / "loose.ckpt"  # a checkpoint copied out of its run folder
    loose.write_bytes((tmp_path / "run" / "checkpoints" / "best.ckpt").read_bytes())
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    run_id = runs_of(store["uri"]).run_id[0]
    for target, expected in [
        ("missing.ckpt", "missing.ckpt: no such checkpoint file"),
        ("0123456789abcdef", "neither a checkpoint file nor an MLflow run id"),
        (str(loose), "not inside a sweeplab run folder"),
    ]:
        result = subprocess.run([str(exe), target, "--store", store["uri"]], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 1
        assert (
            result.stderr.strip().splitlines()[-1] == f"sweeplab-eval: error: {expected}"
            or expected in result.stderr.strip().splitlines()[-1]
        )
    for bad_store, expected in [
        (f"sqlite:///{tmp_path / 'junk.db'}", "not an MLflow store"),
        (str(tmp_path / "none.db"), "no such MLflow store"),
    ]:
        result = subprocess.run([str(exe), run_id, "--store", bad_store], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 1 and expected in result.stderr.strip().splitlines()[-1], result.stderr[-500:]


@pytest.mark.slow
def test_eval_cli_prints_the_metrics_and_no_banners(store, tmp_path: Path) -> None:
    """A regression run: the re-test must rebuild the target scaling to report the same units."""
    trained = train_in_process(["data=diabetes", "trainer.max_epochs=3", *store_overrides(store)], tmp_path / "run")
    run_id = runs_of(store["uri"]).run_id[0]
    exe = Path(sys.executable).with_name("sweeplab-eval")
    result = subprocess.run(
        [str(exe), run_id, "--store", store["uri"]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    for banner in ("GPU available", "TPU available", "Tip:"):
        assert banner not in output
    assert f"{trained['test/mse']:.6f}" in result.stdout and trained["test/mse"] > 100  # the target's own units

"""sweeplab compare, sweep ids and resumable sweeps, through real sweeps."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli, runs_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """One 3-run sweep over lr, in its own folder."""
    cwd = tmp_path_factory.mktemp("sweep")
    result = cli(["-m", "model=linear", "optimizer=sgd", "optimizer.lr=0.001,0.01,0.1", "trainer.max_epochs=2", "callbacks=none"], cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    return cwd


def _compare(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sweeplab")
    return subprocess.run(
        [str(exe), "compare", *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    )


def test_every_run_of_a_sweep_shares_one_sweep_id(swept: Path) -> None:
    runs = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")
    assert len(runs) == 3
    assert runs["tags.sweeplab.sweep_id"].nunique() == 1
    assert runs["tags.sweeplab.sweep_id"].iloc[0]


def test_compare_ranks_writes_csv_png_and_best_command(swept: Path) -> None:
    runs = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")
    result = _compare(swept, "--metric", "test/accuracy", "--out", "cmp")
    assert result.returncode == 0, result.stderr
    best = runs.sort_values("metrics.test/accuracy", ascending=False).iloc[0]
    lr = best["params.optimizer.lr"]
    reproduce = next(line for line in result.stdout.splitlines() if line.startswith("reproduce:"))
    assert reproduce.startswith("reproduce: sweeplab-train model=linear optimizer=sgd")
    assert f"optimizer.lr={lr} " in reproduce
    csv = pd.read_csv(swept / "cmp" / "compare_sweeplab_test_accuracy.csv")
    assert list(csv["metrics.test/accuracy"]) == sorted(runs["metrics.test/accuracy"], reverse=True)
    assert "optimizer.lr" in csv.columns and "model" not in csv.columns  # only what differs
    assert (swept / "cmp" / "compare_sweeplab_test_accuracy.png").stat().st_size > 5000


def test_compare_filters_by_sweep_and_rejects_unknown_metric(swept: Path) -> None:
    sweep = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")["tags.sweeplab.sweep_id"].iloc[0]
    ok = _compare(swept, "--sweep", sweep, "--metric", "val/loss", "--out", "cmp")
    assert ok.returncode == 0 and "lower is better" not in ok.stderr
    # Ranked by another metric, the four test scores are still shown and written.
    csv = pd.read_csv(swept / "cmp" / "compare_sweeplab_val_loss.csv")
    assert {f"metrics.test/{m}" for m in ("f1", "accuracy", "precision", "recall")} <= set(csv.columns)
    bad = _compare(swept, "--metric", "test/auc")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("sweeplab: error: --metric test/auc: not logged by these runs; available:")
    missing = _compare(swept, "--experiment", "nope")
    assert "--experiment 'nope': no such experiment" in missing.stderr


def test_rerunning_a_sweep_skips_finished_configs(swept: Path) -> None:
    args = ["-m", "model=linear", "optimizer=sgd", "optimizer.lr=0.001,0.01,0.1,0.2", "trainer.max_epochs=2", "callbacks=none"]
    result = cli(args, cwd=swept)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("identical config finished as run") == 3
    runs = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")
    assert len(runs) == 4  # only lr=0.2 was new
    # The parent says what the sweep did, and the skipped jobs stay members of it.
    assert "4 jobs: 1 trained, 3 skipped, 0 failed" in result.stdout
    assert result.stdout.count("skipped, identical config already FINISHED as run") == 3
    # The sweep's own run holds one job it trained and links the three it reused by id.
    sweep_run = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}", sweeps=True).sort_values("start_time").iloc[-1]
    note = sweep_run["tags.mlflow.note.content"]
    assert note.count("skipped, identical config already FINISHED as run") == 3 and note.count("/runs/") == 4
    # The page it printed lists its four jobs, the three reused ones among them.
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")
    key = next(line for line in result.stdout.splitlines() if line.startswith("see the sweep:")).rsplit("viewStateShareKey=", 1)[1]
    experiment = client.get_experiment_by_name("sweeplab")
    state = json.loads(json.loads(experiment.tags[f"mlflow.sharedViewState.{key}"])["state"])
    assert len(client.search_runs([experiment.experiment_id], state["searchFilter"])) == 4
    sweep = next(line for line in result.stdout.splitlines() if "4 jobs:" in line).split()[2].rstrip(":")
    listed = _compare(swept, "--sweep", sweep, "--metric", "test/accuracy", "--out", "cmp2")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("FINISHED (reused)") == 3 and listed.stdout.count("FINISHED") == 4
    forced = cli([*args[:-1], "trainer.max_epochs=2", "skip_finished=false", "callbacks=none"], cwd=swept)
    assert forced.returncode == 0
    assert "identical config" not in forced.stdout and "4 jobs: 4 trained, 0 skipped, 0 failed" in forced.stdout
    assert len(runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")) == 8


def test_compare_stays_readable_at_80_columns_in_a_pipe(swept: Path) -> None:
    exe = Path(sys.executable).with_name("sweeplab")
    result = subprocess.run(
        [str(exe), "compare", "--metric", "test/accuracy", "--out", "cmp80"],
        cwd=swept,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80 and "…" not in result.stdout
    # Commands stay on one line, so they can be copied whole.
    assert any(line.startswith("reproduce: sweeplab-train ") and line.endswith("hydra.mode=RUN") for line in lines)
    runs = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")
    for value in runs["metrics.test/accuracy"]:  # every number in full
        assert f"{value:.4f}" in result.stdout
    header = "\n".join(lines[:6])
    assert "optimizer." in header and " lr " in header  # the swept key, wrapped at its dot
    assert "ranked by test/accuracy" in lines[0]


def test_reproduce_line_of_a_preset_sweep_trains_that_one_run(tmp_path: Path) -> None:
    """A job of a multirun preset: its overrides alone would re-enter the sweep and skip."""
    import shlex

    sweep = [
        "experiment=optimizers_digits",
        "hydra.sweeper.params.optimizer='adam,sgd'",
        "hydra.sweeper.params.seed=1",
        "trainer.max_epochs=1",
        "callbacks=none",
    ]
    assert cli(sweep, cwd=tmp_path).returncode == 0
    shown = _compare(tmp_path, "--experiment", "optimizers_digits", "--metric", "test/accuracy", "--out", "cmp")
    command = next(line for line in shown.stdout.splitlines() if line.startswith("reproduce: ")).removeprefix("reproduce: ")
    assert command.endswith("hydra.mode=RUN")
    again = cli(shlex.split(command)[1:], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "identical config" not in again.stdout and "sweep " not in again.stdout
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}", "optimizers_digits")
    assert len(runs) == 3  # the two jobs, and exactly one more
    newest = runs.sort_values("start_time").iloc[-1]
    best = runs.sort_values("start_time").iloc[:2].sort_values("metrics.test/accuracy").iloc[-1]
    assert newest["tags.sweeplab.config_hash"] == best["tags.sweeplab.config_hash"]
    assert newest["metrics.test/accuracy"] == best["metrics.test/accuracy"]  # same seed, same result


def test_compare_refuses_a_store_that_does_not_exist_or_is_not_one(swept: Path, tmp_path: Path) -> None:
    missing = _compare(swept, "--store", str(tmp_path / "nowhere" / "mlflow.db"))
    assert missing.returncode == 1
    assert "no such MLflow store" in missing.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "nowhere").exists()  # nothing created
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    junk = _compare(swept, "--store", f"sqlite:///{tmp_path / 'junk.db'}")
    assert junk.returncode == 1 and "not an MLflow store" in junk.stderr.strip().splitlines()[-1]
    by_path = _compare(swept, "--store", "outputs/mlflow.db", "--out", "cmp3")  # a plain path to the file works
    assert by_path.returncode == 0, by_path.stderr


@pytest.mark.slow
def test_reproduce_line_quotes_a_name_with_spaces_and_other_scripts_and_the_plot_is_quiet(tmp_path: Path) -> None:
    """An experiment name that Hydra's grammar needs quoted (a space, letters beyond ASCII)
    survives the overrides tag, the reproduce line runs as printed, and the
    PNG does not warn about glyphs the font lacks."""
    name = "试验 café runs"
    first = cli([f"experiment_name='{name}'", "model=linear", "trainer.max_epochs=1", "callbacks=none"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    shown = _compare(tmp_path, "--experiment", name, "--metric", "test/accuracy")
    assert shown.returncode == 0, shown.stderr
    assert "Glyph" not in shown.stderr and "missing from font" not in shown.stderr
    line = next(text for text in shown.stdout.splitlines() if text.startswith("reproduce: "))
    command = line.removeprefix("reproduce: ").replace("sweeplab-train", str(Path(sys.executable).with_name("sweeplab-train")), 1)
    again = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"}
    )
    assert again.returncode == 0, again.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}", name)
    assert len(runs) == 2 and set(runs.status) == {"FINISHED"}


def test_a_sweeps_runs_differ_in_params_only_where_the_sweep_varied_and_say_so(swept: Path) -> None:
    runs = runs_of(f"sqlite:///{swept / 'outputs' / 'mlflow.db'}")
    first_sweep = runs.sort_values("start_time")["tags.sweeplab.sweep_id"].iloc[0]  # other tests here add runs
    runs = runs[runs["tags.sweeplab.sweep_id"] == first_sweep].reset_index(drop=True)
    params = [c for c in runs.columns if c.startswith("params.")]
    differing = sorted(c.removeprefix("params.") for c in params if runs[c].astype(str).nunique() > 1)
    assert differing == ["optimizer.lr"]  # no run folder or checkpoint path among them
    assert set(runs["tags.sweeplab.swept"]) == {"optimizer.lr"}
    note = runs["tags.mlflow.note.content"][0]
    assert "sweeplab-train " in note and "hydra.mode=RUN" in note and "test/accuracy" in note

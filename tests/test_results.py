"""Replicates as mean ± sd: sweeplab.runs / summarize for notebooks and
`sweeplab compare --group-by ... --over seed`, on a store filled by the MLflow
client (the numbers are known, so the aggregates are checked exactly)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweeplab

F1 = {("adam", 0.01): [0.91, 0.93, 0.95], ("adam", 0.001): [0.80, 0.84, 0.82], ("sgd", 0.01): [0.70, 0.74, 0.66]}


@pytest.fixture
def replicates(tmp_path: Path) -> str:
    """9 runs: optimizer x lr over seeds 1-3, as sweeplab writes them (overrides tag, params, metrics)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("opt", artifact_location=(tmp_path / "art").as_uri())
    for (optimizer, lr), scores in F1.items():
        for seed, f1 in zip((1, 2, 3), scores):
            overrides = [f"optimizer={optimizer}", f"optimizer.lr={lr}", f"seed={seed}"]
            tags = {"sweeplab.overrides": shlex.join(overrides), "mlflow.runName": ",".join(overrides), "sweeplab.choice.model": "mlp"}
            run = client.create_run(experiment, tags=tags)
            for key, value in {
                "optimizer.lr": lr,
                "seed": seed,
                "data.seed": seed,
                "model.width": 64,
                "paths.run_dir": f"/runs/{run.info.run_id}",
            }.items():
                client.log_param(run.info.run_id, key, value)
            client.log_metric(run.info.run_id, "test/f1", f1)
            client.log_metric(run.info.run_id, "test/accuracy", f1 + 0.01)
            client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def test_runs_flattens_params_overrides_and_metrics_and_filters(replicates: str) -> None:
    df = sweeplab.runs(experiment="opt", store=replicates)
    assert len(df) == 9 and {"run_id", "status", "optimizer", "optimizer.lr", "seed", "test/f1", "duration_s"} <= set(df.columns)
    assert set(df["model"]) == {"mlp"}  # a group chosen by a preset, from the run's tags
    picked = sweeplab.runs(experiment="opt", store=replicates, where={"optimizer": ["adam"], "optimizer.lr": (1e-3, 5e-3)})
    assert sorted(picked["test/f1"]) == pytest.approx(sorted(F1[("adam", 0.001)]))
    assert len(sweeplab.runs(experiment="opt", store=replicates, where={"test/f1": (0.9, 1.0)})) == 3
    with pytest.raises(ValueError, match=r"where=\{'momentum': \.\.\.\}: no such config value or metric in these runs"):
        sweeplab.runs(experiment="opt", store=replicates, where={"momentum": 0.9})


def test_summarize_is_mean_sd_and_n_per_group_ranked(replicates: str) -> None:
    df = sweeplab.runs(experiment="opt", store=replicates)
    table = sweeplab.summarize(df, by=["optimizer", "optimizer.lr"], metrics=["test/f1"], over="seed")
    assert list(zip(table["optimizer"], table["optimizer.lr"])) == [("adam", "0.01"), ("adam", "0.001"), ("sgd", "0.01")]
    for (optimizer, lr), scores in F1.items():
        row = table[(table["optimizer"] == optimizer) & (table["optimizer.lr"] == str(lr))].iloc[0]
        assert row["n"] == 3
        assert row["test/f1 mean"] == pytest.approx(np.mean(scores))
        assert row["test/f1 sd"] == pytest.approx(np.std(scores, ddof=1))


def test_replicates_that_differ_in_more_than_the_seed_are_refused(replicates: str) -> None:
    df = sweeplab.runs(experiment="opt", store=replicates)
    with pytest.raises(ValueError, match=r"--over seed: the runs of adam also differ in optimizer.lr; add it to --group-by"):
        sweeplab.summarize(df, by=["optimizer"], metrics=["test/f1"], over="seed")


@pytest.mark.slow
def test_compare_group_by_over_seed_prints_and_writes_the_aggregate(replicates: str, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("sweeplab")
    result = subprocess.run(
        [str(exe), "compare", "--experiment", "opt", "--store", replicates, "--over", "seed", "--out", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "test/f1 over seed, by optimizer, optimizer.lr" in result.stdout
    assert f"{np.mean(F1[('adam', 0.01)]):.4f} ± {np.std(F1[('adam', 0.01)], ddof=1):.4f}" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└") <= 80
    aggregate = pd.read_csv(tmp_path / "cmp" / "compare_opt_test_f1_by_optimizer_optimizer-lr.csv")
    assert list(aggregate["n"]) == [3, 3, 3] and aggregate["test/f1 mean"].is_monotonic_decreasing
    assert len(pd.read_csv(tmp_path / "cmp" / "compare_opt_test_f1_by_optimizer_optimizer-lr_runs.csv")) == 9
    assert (tmp_path / "cmp" / "compare_opt_test_f1_by_optimizer_optimizer-lr.png").stat().st_size > 10_000


def test_importing_sweeplab_stays_light() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, sweeplab; print(sorted(m for m in ('mlflow', 'pandas', 'torch') if m in sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_a_preset_run_shows_the_values_it_ran_with_where_others_typed_them() -> None:
    """A preset's run typed neither model nor its vector size: compare shows its option and param, not blanks."""
    from sweeplab.reports.compare import differing_overrides

    frame = pd.DataFrame(
        {
            "tags.sweeplab.overrides": [
                "model=word2vec model.vector_size=50",
                "model=word2vec model.vector_size=200",
                "experiment=word_embeddings",
            ],
            "tags.sweeplab.choice.model": ["word2vec", "word2vec", "fasttext"],
            "params.model.vector_size": ["50", "200", "100"],
        }
    )
    columns = differing_overrides(frame)
    assert columns == ["override.experiment", "override.model", "override.model.vector_size"]
    assert list(frame["override.model"]) == ["word2vec", "word2vec", "fasttext"]
    assert list(frame["override.model.vector_size"]) == ["50", "200", "100"]
    assert list(frame["override.experiment"]) == ["", "", "word_embeddings"]


def test_the_docs_notebook_filter_keeps_both_optimizers_at_their_preset_rates() -> None:
    """docs/sweeps.md's example: optimizers_digits trains adam at lr 0.001 and sgd at 0.05; its where= keeps both."""
    import ast
    import re

    from sweeplab.reports.results import filter_runs

    page = (Path(__file__).resolve().parent.parent / "docs" / "sweeps.md").read_text()
    where = ast.literal_eval(re.search(r"where=(\{.*?\})\n", page).group(1))  # the dict as the page prints it
    frame = pd.DataFrame({"optimizer": ["adam", "sgd", "rmsprop"], "optimizer.lr": ["0.001", "0.05", "0.01"], "seed": ["1", "1", "1"]})
    assert sorted(filter_runs(frame, where)["optimizer"]) == ["adam", "sgd"]

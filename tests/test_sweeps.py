"""Hydra's launcher and sweeper plugins with sweeplab's MLflow store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NO_MODEL, cli, runs_of, saved_predictions, sweeps_of

pytestmark = pytest.mark.slow
QUICK = ["trainer.max_epochs=2", "callbacks=none", "data=iris", *NO_MODEL]


def _store(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"


def test_parallel_jobs_on_a_new_store_lose_nothing(tmp_path: Path) -> None:
    """8 runs, 4 at a time, on a store that does not exist yet (MLflow's schema-creation race)."""
    seeds = ",".join(str(i) for i in range(1, 9))
    result = cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", f"seed={seeds}", *QUICK], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each worker's torch used its share of the cores (joblib's cores / n_jobs, at least 1; 1 under
    # this suite's OMP_NUM_THREADS=1), and the summary says so.
    expected = int(os.environ.get("OMP_NUM_THREADS") or max((os.cpu_count() or 1) // 4, 1))
    assert f"8 trained, 0 skipped, 0 failed; {expected} torch thread" in result.stdout
    assert "4 worker processes" in result.stdout
    records = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/multirun/*/*/*/sweeplab_job.json")]
    assert len(records) == 8 and {r["torch_threads"] for r in records} == {expected}
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 8 and set(runs.status) == {"FINISHED"}
    assert runs["tags.sweeplab.sweep_id"].nunique() == 1
    assert len(sweeps_of(_store(tmp_path))) == 1  # joblib's workers nest their runs under the sweep's
    metric_columns = [c for c in runs.columns if c.startswith("metrics.") and c != "metrics.lr"]
    assert runs[metric_columns].notna().all().all()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_store(tmp_path))
    assert {len(client.get_metric_history(r, "val/loss")) for r in runs.run_id} == {2}
    with sqlite3.connect(tmp_path / "outputs" / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    dirs = {p.parent.name for p in (tmp_path / "outputs" / "multirun").glob("*/*/*/config.yaml")}
    assert len(dirs) == 8  # parallel jobs never share an output folder


def test_submitit_local_launcher(tmp_path: Path) -> None:
    result = cli(["-m", "hydra/launcher=submitit_local", "optimizer=adam,sgd", *QUICK], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_of(_store(tmp_path))
    assert sorted(runs["params.optimizer"]) == ["adam", "sgd"]
    assert len(sweeps_of(_store(tmp_path))) == 1  # submitit's processes too
    logs = {p.name: p.read_text()[-1500:] for p in tmp_path.glob("outputs/multirun/*/*/.submitit/*/*_log.err")}
    assert set(runs.status) == {"FINISHED"}, (runs.filter(like="error").to_dict("records"), logs)
    # The jobs' own output only reaches .submitit logs: the parent says what they did.
    again = cli(["-m", "hydra/launcher=submitit_local", "optimizer=sgd,rmsprop", *QUICK], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 jobs: 1 trained, 1 skipped, 0 failed" in again.stdout
    assert len(runs_of(_store(tmp_path))) == 3


def test_failing_run_reports_worst_value_to_the_sweeper(tmp_path: Path) -> None:
    result = cli(
        ["hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", "data.val_fraction=0.5", "data.test_fraction=0.45", *QUICK[:2]],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("failed: data.val_fraction + data.test_fraction") == 2
    assert "2 jobs: 0 trained, 0 skipped, 2 failed" in result.stdout
    assert result.stdout.count("failed: data.val_fraction + data.test_fraction") == 2
    # Both trials are FAIL in the study, not a value a sampler would learn from.
    assert "2 trials: 0 complete, 0 pruned, 2 failed" in result.stdout and "no trial completed" in result.stdout
    best = next((tmp_path / "outputs" / "multirun").glob("*/*/optimization_results.yaml")).read_text()
    assert "best_value: null" in best


def test_ddp_on_cpu_with_two_processes(tmp_path: Path) -> None:
    """trainer=ddp: two gloo processes train, rank 0 alone tracks, tests and reports."""
    from sklearn.metrics import accuracy_score

    args = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "callbacks.progress_bar=null",
        "data=wine",
    ]
    result = cli(args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test metrics") == 1
    assert "sync_dist" not in result.stderr  # epoch values are logged with the sync setting DDP needs
    output = result.stdout + result.stderr
    for rank in (0, 1):  # Lightning's INFO line once, not again through Hydra's root handler
        assert output.count(f"Initializing distributed: GLOBAL_RANK: {rank}") == 1, output[-3000:]
    assert "callbacks used to create the checkpoint" not in output  # no ckpt_path was given: no advice about one
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 1 and runs.status[0] == "FINISHED"
    assert runs["params.trainer.strategy"][0] == "ddp"
    predictions = next((tmp_path / "outputs" / "runs").glob("*/*/test_predictions.csv"))
    y_true, y_pred = saved_predictions(predictions)
    assert len(y_true) == 27  # the whole wine test split, each sample once
    assert runs["metrics.test/accuracy"][0] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)


@pytest.mark.parametrize(("launcher", "collector_on"), [("basic", False), ("joblib", True)])
def test_a_sweep_parent_ends_its_start_up_when_other_processes_run_the_jobs(launcher: str, collector_on: bool, monkeypatch) -> None:
    """The basic launcher trains in the parent, whose start-up lasts until the first
    job trains; a parent that only waits on workers has the collector back at once."""
    import gc

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from sweeplab import start_up
    from sweeplab.config import CONFIG_MODULE, register_experiments
    from sweeplab.sweeps import callback as sweeps

    register_experiments()
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        config = compose("train", overrides=[f"hydra/launcher={launcher}", "logger=none"], return_hydra_config=True)
    monkeypatch.setattr(start_up, "_collector_paused", None)  # as in a fresh process
    monkeypatch.setenv(sweeps.PARENT_ENV, "")  # the callback sets both; restored after the test
    monkeypatch.setenv(sweeps.SWEPT_ENV, "")
    start_up.pause_collector_for_start_up()
    try:
        sweeps.SweepCallback().on_multirun_start(config)
        assert gc.isenabled() is collector_on
    finally:
        gc.enable()


def test_params_say_what_defines_a_run_and_names_leave_out_bookkeeping(tmp_path: Path) -> None:
    """What MLflow's compare page opens on: the swept keys and each group's option by name,
    none of the bookkeeping; run names without it, floats cut to 4 significant digits."""
    sweep = ["-m", "optimizer=adam,sgd", "seed=1,2", "optimizer.lr=0.0123456789", "print_config=false"]
    result = cli([*sweep, "trainer.max_epochs=1", "data=iris", *NO_MODEL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 4 and set(runs.status) == {"FINISHED"}
    params = {c.removeprefix("params.") for c in runs.columns if c.startswith("params.")}
    assert sorted(runs["params.optimizer"]) == ["adam", "adam", "sgd", "sgd"]
    assert {"seed", "optimizer.lr", "data", "model", "model.hidden_sizes", "trainer.max_epochs"} <= params
    assert set(runs["params.optimizer.lr"]) == {"0.0123456789"}  # whole in params and in the overrides tag
    assert runs["tags.sweeplab.overrides"].str.contains("optimizer.lr=0.0123456789").all()
    bookkeeping = ("print_config", "skip_finished", "run_name", "tags", "ckpt_path", "resume", "experiment_name")
    left = [
        p for p in params if p in bookkeeping or p.startswith(("logger.", "paths.", "callbacks.progress_bar", "callbacks.last_checkpoint"))
    ]
    assert not left and not [p for p in params if p.endswith(("._target_", "._partial_"))], sorted(params)
    names = set(runs["tags.mlflow.runName"])
    assert names == {
        f"optimizer={o},seed={s},optimizer.lr=0.01235,trainer.max_epochs=1,data=iris" for o in ("adam", "sgd") for s in (1, 2)
    }, names


def test_a_sweep_is_a_parent_run_holding_its_summary(tmp_path: Path) -> None:
    """The sweep's own run: its jobs nested under it, the ranked table with their scores in its
    description, the best run's reproduce command and config, the compare CSV and PNG."""
    from mlflow.tracking import MlflowClient

    result = cli(["-m", "optimizer=adam,sgd", "seed=1,2", "trainer.max_epochs=1", "data=iris", "callbacks=none", *NO_MODEL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = sweeps_of(_store(tmp_path)).itertuples()
    runs = runs_of(_store(tmp_path))
    assert sweep.status == "FINISHED"
    assert len(runs) == 4 and set(runs["tags.mlflow.parentRunId"]) == {sweep.run_id}
    note = MlflowClient(_store(tmp_path)).get_run(sweep.run_id).data.tags["mlflow.note.content"]
    assert "4 jobs: 4 trained, 0 skipped, 0 failed" in note
    ranked = runs.sort_values("metrics.test/f1", ascending=False)
    rows = [line for line in note.splitlines() if line.startswith("| ") and "/runs/" in line]
    assert len(rows) == 4
    for row, (_, run) in zip(rows, ranked.iterrows()):  # best first, each run linked with its four scores
        assert f"/runs/{run.run_id})" in row and f"{run['metrics.test/f1']:.4f}" in row and f"{run['metrics.test/recall']:.4f}" in row
    assert f"best: run {ranked.run_id.iloc[0]}" in note and "hydra.mode=RUN" in note
    files = {a.path for a in MlflowClient(_store(tmp_path)).list_artifacts(sweep.run_id)}
    assert {"compare_sweeplab_test_f1.csv", "compare_sweeplab_test_f1.png", "best_config.yaml", "sweep_summary.txt"} <= files
    compared = subprocess.run(
        [str(Path(sys.executable).with_name("sweeplab")), "compare", "--metric", "test/f1"], cwd=tmp_path, capture_output=True, text=True
    )
    assert compared.returncode == 0 and "sweep 20" not in compared.stdout  # the sweep's own run is no config to rank
    (kept,) = tmp_path.glob("outputs/multirun/*/*/compare/compare_sweeplab_test_f1.csv")  # the sweep's, as compare --sweep writes it
    sweep_id = sweeps_of(_store(tmp_path))["tags.sweeplab.sweep_id"].iloc[0]
    also = ["--also", "test/accuracy", "test/precision", "test/recall"]
    args = ["compare", "--sweep", sweep_id, "--metric", "test/f1", *also, "--out", "cmp"]
    assert subprocess.run([str(Path(sys.executable).with_name("sweeplab")), *args], cwd=tmp_path, capture_output=True).returncode == 0
    assert kept.read_text() == (tmp_path / "cmp" / "compare_sweeplab_test_f1.csv").read_text()


def test_a_large_sweeps_description_keeps_its_best_run_within_mlflows_tag_length() -> None:
    """MLflow cuts a tag past its length (and warns on the console): a 48-run sweep's ranked
    table used to lose its last rows and the best run's reproduce line with them."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from sweeplab.sweeps.parent import description

    summary = ["**sweep s: 48 jobs: 48 trained, 0 skipped, 0 failed**", "", "    fused group g1: jobs 0, 1, 2 trained together"]
    header = ["| # | run | status | optimizer.lr | seed | test/f1 | test/accuracy |", "|---|---|---|---|---|---|---|"]
    rows = [
        f"| {i + 1} | [bold-owl-{i}](#/experiments/1/runs/{i:032x}) | FINISHED | 0.001 | {i} | 0.9{i:03d} | 0.9{i:03d} |" for i in range(48)
    ]
    rows = [row + " " * (170 - len(row)) for row in rows]  # as wide as a real row with four scores
    best = [
        "",
        f"best: run {0:032x}, test/f1 = 0.9000",
        "",
        "reproduce:",
        "",
        "    sweeplab-train optimizer.lr=0.001 seed=0 hydra.mode=RUN",
    ]
    compare = "sweeplab compare --experiment 'my runs' --sweep s"

    note = description(summary, header + rows, best, compare)
    assert len(note) <= MAX_TAG_VAL_LENGTH < len("\n".join([*summary, "", *header, *rows, *best]))
    lines = note.splitlines()
    assert lines[: len(summary) + 3] == [*summary, "", *header] and lines[-len(best) :] == best
    shown = [line for line in lines if line.startswith("| ") and "/runs/" in line]
    assert 30 <= len(shown) < 48 and shown == rows[: len(shown)]  # best first, the lowest left out
    assert f"{48 - len(shown)} more runs, not shown here: `{compare}` lists them all" in lines

    # A summary too long by itself (a line for each of hundreds of failed jobs) gives way too.
    failures = [f"    job {i} failed: ValueError: a reason long enough to fill a line of the summary" for i in range(400)]
    note = description([summary[0], "", *failures], header + rows, best, compare)
    assert len(note) <= MAX_TAG_VAL_LENGTH and note.splitlines()[-len(best) :] == best
    assert note.startswith(summary[0]) and "more lines of this summary are in the sweep's sweep_summary.txt" in note
    assert "48 more runs, not shown here" in note
    # A small sweep's description is all of it, as before.
    assert description(summary, header + rows[:4], best, compare) == "\n".join([*summary, "", *header, *rows[:4], *best])


def test_the_sweeps_end_runs_over_a_frozen_heap_and_hands_it_back(monkeypatch) -> None:
    """The summary's collections skipped what the sweep left (two took 0.2 s of its 0.8 s). A
    process that goes on after the multirun gets its heap back to the collector; a launcher whose
    start-up froze its heap (it runs no job to end that freeze) keeps it frozen; someone else's
    freeze is left as it was."""
    import gc

    from sweeplab import start_up
    from sweeplab.sweeps.callback import SweepCallback

    seen: list[int] = []
    monkeypatch.setattr(SweepCallback, "_end", lambda self, config: seen.append(gc.get_freeze_count()))
    monkeypatch.setattr(start_up, "_frozen_at_start_up", False)  # as a process whose first run has ended
    gc.unfreeze()
    try:
        SweepCallback().on_multirun_end(config=None)
        assert seen[0] > 0 and gc.get_freeze_count() == 0
        gc.freeze()  # someone else's
        frozen = gc.get_freeze_count()
        SweepCallback().on_multirun_end(config=None)
        assert 0 < seen[1] <= frozen and 0 < gc.get_freeze_count() <= frozen  # nothing more frozen, nothing thawed
        monkeypatch.setattr(start_up, "_frozen_at_start_up", True)  # start-up's, then the jobs' configs made
        made = [[i] for i in range(1000)]  # lists: tracked by the collector
        SweepCallback().on_multirun_end(config=None)
        assert seen[2] >= frozen + len(made) and gc.get_freeze_count() >= frozen + len(made)  # still frozen, these too
    finally:
        gc.unfreeze()

"""A sweep's own MLflow run, the parent of its jobs' runs (``mlflow.parentRunId``),
as MLflow's hyper-parameter tuning guide nests them: the UI shows a sweep as one
row that expands into its jobs.

The process that starts the sweep opens it before any job starts and hands its id
to the jobs through the environment (in-process, joblib and submitit workers and
SLURM jobs inherit it). When the sweep ends, the parent holds its summary: the
ranked table of the jobs with their main scores in its description, the best
run's reproduce command and config, the runs it reused (skip_finished) linked by
id, the compare CSV and PNG, an Optuna study's results. An interrupted sweep's
parent is KILLED with its jobs. It carries no config hash and no metrics, so
``skip_finished``, ``resume`` and ``compare`` never take it for a job.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from sweeplab.record import tags

PARENT_RUN_ENV = "SWEEPLAB_SWEEP_RUN"  # the sweep's run id, seen by its jobs
PARENT_STORE_ENV = "SWEEPLAB_SWEEP_RUN_STORE"  # where it is tracked: a worker that outlives the sweep's process closes it
MAIN_SCORES = ("test/f1", "test/accuracy", "test/precision", "test/recall", "test/r2", "test/mse", "test/adjusted_rand", "test/mean_return")


def job_tags() -> dict[str, str]:
    """In a job of a sweep: the tag that nests its run under the sweep's."""
    parent = os.environ.get(PARENT_RUN_ENV)
    return {"mlflow.parentRunId": parent} if parent else {}


def open_run(uri: str, experiment_id: str, sweep: str, command: str, swept: list[str]) -> str:
    """Start the sweep's run (RUNNING, with the process tags that tell a live one from a dead one)."""
    from mlflow.tracking import MlflowClient

    from sweeplab.record import liveness

    run_tags = {
        "mlflow.runName": f"sweep {sweep}",
        tags.KIND: "sweep",
        tags.SWEEP_ID: sweep,
        "sweeplab.command": command,
        **({"sweeplab.swept": ",".join(swept)} if swept else {}),
        **liveness.process_tags(),
    }
    run = MlflowClient(uri).create_run(experiment_id, tags=run_tags)
    os.environ[PARENT_RUN_ENV], os.environ[PARENT_STORE_ENV] = run.info.run_id, uri
    return run.info.run_id


def close_run(uri: str, run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    os.environ.pop(PARENT_RUN_ENV, None)
    os.environ.pop(PARENT_STORE_ENV, None)
    MlflowClient(uri).set_terminated(run_id, status=status)


def close_orphaned() -> None:
    """In a worker whose sweep's process is gone (SIGKILL): the sweep's run is KILLED, not left RUNNING."""
    from mlflow.tracking import MlflowClient

    run_id, uri = os.environ.get(PARENT_RUN_ENV), os.environ.get(PARENT_STORE_ENV)
    if run_id and uri:
        client = MlflowClient(uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")


def ranking(logged: set[str], optimized: Any) -> tuple[str | None, list[str]]:
    """The metric that ranks a sweep's runs (the sweeper's, else the first main score) and the
    scores shown beside it (the main test scores logged, else up to six test/ ones)."""
    scores = [m for m in MAIN_SCORES if m in logged] or sorted(m for m in logged if m.startswith("test/"))[:6]
    metric = optimized if isinstance(optimized, str) and optimized in logged else next(iter(scores), None)
    return metric, scores


def summarize_run(
    uri: str, experiment: str, experiment_id: str, run_id: str, sweep: str, sweep_dir: Path, summary: str, optimized: Any
) -> tuple[str | None, list[str]]:
    """The sweep's summary into its run: description (ranked table, best, reused runs) and files.
    Returns the ranking metric and the scores shown (``ranking``)."""
    from mlflow.tracking import MlflowClient

    from sweeplab.reports.results import load_runs

    client = MlflowClient(uri)
    lines = [f"**{summary.splitlines()[0].removeprefix('sweeplab-train: ')}**", ""]
    lines += [f"    {line.strip()}" for line in summary.splitlines()[1:]]
    try:
        runs = load_runs(uri, experiment, sweep)
    except ValueError:  # no job left a run
        runs = None
    files: list[Path] = []
    metric, scores = None, []
    table: list[str] = []
    best: list[str] = []
    if runs is not None:
        metric, scores = ranking({c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}, optimized)
        table, best = _ranked_table(runs, metric, scores, experiment_id)
        if metric is not None:
            files += _compare_files(runs, experiment, metric, sweep_dir, scores)
            files += _best_config(runs, metric, sweep_dir)
    files += [p for p in (sweep_dir / "optimization_results.yaml",) if p.is_file()]  # an Optuna study's results
    summary_file = sweep_dir / "sweep_summary.txt"
    summary_file.write_text(summary + "\n")
    for path in [summary_file, *files]:
        client.log_artifact(run_id, str(path))
    compare = f"sweeplab compare {'' if experiment == 'sweeplab' else f'--experiment {shlex.quote(experiment)} '}--sweep {sweep}"
    client.set_tag(run_id, "mlflow.note.content", description(lines, table, best, compare))
    return metric, scores


def description(summary: list[str], table: list[str], best: list[str], compare: str, limit: int | None = None) -> str:
    """The sweep run's description: the summary, the ranked table, the best run and its reproduce
    line, within MLflow's tag length (``limit``; MLflow would cut the end, the best run's lines
    with it, and warn on the console). What does not fit is said, with where to find it: the
    table loses its last rows first (``compare``, the command that lists them all), then the
    summary its last lines."""
    if limit is None:
        from mlflow.utils.validation import MAX_TAG_VAL_LENGTH as limit

    def note(summary: list[str], table: list[str]) -> str:
        return "\n".join([*summary, *([""] if table else []), *table, *best])

    header, rows = table[:2], table[2:]

    def ranked(kept: int) -> list[str]:
        if kept == len(rows):
            return table
        return [*header, *rows[:kept], "", f"{len(rows) - kept} more runs, not shown here: `{compare}` lists them all"]

    def summarized(kept: int) -> list[str]:
        if kept == len(summary):
            return summary
        return [*summary[:kept], f"{len(summary) - kept} more lines of this summary are in the sweep's sweep_summary.txt"]

    kept_rows = _most_that_fit(len(rows), lambda k: len(note(summary, ranked(k))) <= limit)
    kept_lines = len(summary)
    if kept_rows < 0:  # the summary alone is too long
        kept_rows = 0
        kept_lines = max(_most_that_fit(len(summary), lambda k: len(note(summarized(k), ranked(0))) <= limit), 1)
    return note(summarized(kept_lines), ranked(kept_rows))[:limit]


def _most_that_fit(n: int, fits: Any) -> int:
    """The largest k in 0..n for which ``fits(k)`` (true up to some k, false beyond), or -1 if none."""
    low, high = -1, n
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _ranked_table(runs: Any, metric: str | None, scores: list[str], experiment_id: str) -> tuple[list[str], list[str]]:
    """The jobs best first, as a Markdown table (each run linked, what differs, the main scores),
    and the lines naming the best run with its reproduce command."""
    from sweeplab.metrics.scores import lower_is_better
    from sweeplab.reports.compare import differing_overrides

    if metric is not None:
        runs = runs.sort_values(f"metrics.{metric}", ascending=lower_is_better(metric), na_position="last")
    runs = runs.reset_index(drop=True)
    keys = differing_overrides(runs)
    header = ["#", "run", "status", *(k.removeprefix("override.") for k in keys), *scores]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in runs.iterrows():
        name = str(row.get("tags.mlflow.runName") or row.run_id[:8]).replace("|", "\\|")
        values = [str(row[k]).replace("|", "\\|") for k in keys]
        numbers = ["-" if row.get(f"metrics.{m}") != row.get(f"metrics.{m}") else f"{row[f'metrics.{m}']:.4f}" for m in scores]
        link = f"[{name}](#/experiments/{experiment_id}/runs/{row.run_id})"
        rows.append("| " + " | ".join([str(i + 1), link, str(row.status), *values, *numbers]) + " |")
    if metric is None or not runs[f"metrics.{metric}"].notna().any():
        return rows, []
    best = runs.iloc[0]
    lines = ["", f"best: run {best.run_id}, {metric} = {best[f'metrics.{metric}']:.4f}", "", "reproduce:", ""]
    return rows, [*lines, f"    {tags.reproduce_command(best)}"]


def _compare_files(runs: Any, experiment: str, metric: str, sweep_dir: Path, scores: list[str]) -> list[Path]:
    """The CSV and PNG ``sweeplab compare --sweep`` writes, into the sweep's folder, from the runs loaded already."""
    from sweeplab.reports.compare import differing_overrides, rank, write_comparison

    ranked = rank(runs, metric)
    params = differing_overrides(ranked)
    metrics = [metric, *[m for m in scores if m != metric and f"metrics.{m}" in ranked.columns]]
    return list(write_comparison(ranked, params, metrics, experiment, sweep_dir / "compare"))


def _best_config(runs: Any, metric: str, sweep_dir: Path) -> list[Path]:
    """The best run's config.yaml, from its run folder where this machine has it."""
    from sweeplab.metrics.scores import lower_is_better

    ranked = runs[runs[f"metrics.{metric}"].notna()].sort_values(f"metrics.{metric}", ascending=lower_is_better(metric))
    if ranked.empty or "tags.sweeplab.run_dir" not in ranked.columns:
        return []
    config = Path(str(ranked.iloc[0]["tags.sweeplab.run_dir"])) / "config.yaml"
    if not config.is_file():
        return []
    best = sweep_dir / "best_config.yaml"
    best.write_text(config.read_text())
    return [best]

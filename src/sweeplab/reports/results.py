"""Runs as a pandas DataFrame for notebooks and ``sweeplab compare``, on top of
``mlflow.search_runs``: one row per run, config values as plain columns
(``optimizer.lr``; the config group chosen on the command line, such as
``optimizer`` = ``adam``, from the run's overrides), metrics by their own
names (``test/f1``), and replicate aggregation (mean, sd, n).

    import sweeplab
    df = sweeplab.runs(experiment="optimizers_digits", where={"optimizer": ["adam", "sgd"], "optimizer.lr": (1e-4, 0.1)})
    sweeplab.summarize(df, by=["optimizer"], metrics=["test/f1", "test/accuracy"])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RUN_COLUMNS = ("run_id", "status", "run_name", "sweep_id", "start_time", "end_time", "duration_s")


def runs(
    experiment: str = "sweeplab",
    sweep: str | None = None,
    where: Mapping[str, Any] | None = None,
    store: str | None = None,
) -> Any:
    """The runs of ``experiment`` (one ``sweep`` of it, if given) as a DataFrame.

    ``where`` filters on config values and metrics: a list means "one of",
    a 2-tuple ``(low, high)`` an inclusive range, anything else equality.
    Values are compared as numbers when both sides are numbers, else as text.
    """
    from sweeplab.record.tags import parse_overrides
    from sweeplab.record.tracking import default_tracking_uri

    raw = load_runs(store or default_tracking_uri(), experiment, sweep)
    return filter_runs(flatten_runs(raw, parse_overrides(raw)), where or {})


def load_runs(uri: str, experiment: str, sweep: str | None = None) -> Any:
    """The experiment's runs as a DataFrame (mlflow.search_runs), optionally one
    sweep's: the runs it trained and the finished runs it reused (skip_finished)."""
    import mlflow
    import pandas as pd

    from sweeplab.record.tags import SWEEPS
    from sweeplab.record.tracking import redact_uri

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise ValueError(
            f"--experiment {experiment!r}: no such experiment in {redact_uri(uri)}; experiments there: {', '.join(names) or 'none'}"
        )
    if sweep:
        trained = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.`sweeplab.sweep_id` = '{sweep}'")
        member = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.`{SWEEPS}` LIKE '%{sweep}%'")
        runs = pd.concat([trained, member], ignore_index=True).drop_duplicates("run_id", ignore_index=True)
        if "tags.sweeplab.sweep_id" in runs.columns:
            reused = runs["tags.sweeplab.sweep_id"].fillna("") != sweep
            runs.loc[reused, "status"] = runs.loc[reused, "status"] + " (reused)"
    else:
        runs = mlflow.search_runs(experiment_names=[experiment])
    from sweeplab.record.tags import is_sweep_run

    runs = runs[~is_sweep_run(runs)].reset_index(drop=True)  # a sweep's own run holds its summary, not a config
    if runs.empty:
        raise ValueError(f"no runs in experiment {experiment!r}" + (f" for --sweep {sweep}" if sweep else ""))
    return runs


def flatten_runs(raw: Any, overrides: list[dict[str, str]]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "run_id": raw["run_id"],
            "status": raw["status"],
            "run_name": raw.get("tags.mlflow.runName"),
            "sweep_id": raw.get("tags.sweeplab.sweep_id"),
            "start_time": raw["start_time"],
            "end_time": raw["end_time"],
            "duration_s": (raw["end_time"] - raw["start_time"]).dt.total_seconds(),
        }
    )
    params = {c.removeprefix("params."): raw[c] for c in raw.columns if c.startswith("params.")}
    # The option of each config group (optimizer = sgd) is no param of its own: from the run's
    # tags (sweeplab.choice.<group>), else from its command-line overrides.
    chosen: dict[str, list[Any]] = {
        c.removeprefix("tags.sweeplab.choice."): list(raw[c]) for c in raw.columns if c.startswith("tags.sweeplab.choice.")
    }
    for i, parsed in enumerate(overrides):
        for key, value in parsed.items():
            if key not in params:
                column = chosen.setdefault(key, [None] * len(overrides))
                column[i] = column[i] if isinstance(column[i], str) else value
    metrics = {c.removeprefix("metrics."): raw[c] for c in raw.columns if c.startswith("metrics.")}
    columns = {**{k: pd.Series(v, index=raw.index) for k, v in chosen.items()}, **params}
    frame = pd.concat([frame, pd.DataFrame(columns, index=raw.index), pd.DataFrame(metrics, index=raw.index)], axis=1)
    return frame.reset_index(drop=True)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _matches(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, tuple) and len(wanted) == 2:
        number = _number(value)
        return number is not None and float(wanted[0]) <= number <= float(wanted[1])
    if isinstance(wanted, (list, set, frozenset)):
        return any(_matches(value, w) for w in wanted)
    a, b = _number(value), _number(wanted)
    return a == b if a is not None and b is not None else str(value) == str(wanted)


def filter_runs(frame: Any, where: Mapping[str, Any]) -> Any:
    for key, wanted in where.items():
        if key not in frame.columns:
            known = sorted(c for c in frame.columns if c not in RUN_COLUMNS)
            raise ValueError(
                f"where={{{key!r}: ...}}: no such config value or metric in these runs; some that are: {', '.join(known[:25])}"
            )
        frame = frame[[_matches(v, wanted) for v in frame[key]]]
    return frame.reset_index(drop=True)


def summarize(
    frame: Any, by: Sequence[str], metrics: Sequence[str], over: str | None = None, rank_by: str | None = None, descending: bool = True
) -> Any:
    """One row per group of ``by`` values: ``n`` and each metric's mean and
    sample standard deviation (``<metric> mean``, ``<metric> sd``), ranked by
    the mean of ``rank_by`` (default: the first metric). ``over`` names the
    replicate key (e.g. ``seed``): a group whose runs differ in any other
    config value is refused, since its spread would not be replicate noise."""
    import pandas as pd

    missing = [k for k in [*by, *metrics] if k not in frame.columns]
    if missing:
        raise ValueError(f"{', '.join(missing)}: not a config value or metric of these runs")
    if over is not None:
        _check_replicates(frame, by, over)
    rows = []
    for values, group in frame.groupby(list(by), dropna=False, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        row: dict[str, Any] = dict(zip(by, values))
        row["n"] = len(group)
        for metric in metrics:
            column = pd.to_numeric(group[metric], errors="coerce").dropna()
            row[f"{metric} mean"] = float(column.mean()) if len(column) else np.nan
            row[f"{metric} sd"] = float(column.std(ddof=1)) if len(column) > 1 else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"{rank_by or metrics[0]} mean"
    # Equal means rank by the groups' labels, whatever order the store returned the runs in.
    label = table[list(by)].astype(str).agg(" / ".join, axis=1)
    table = table.iloc[sorted(range(len(table)), key=lambda i: label[i])].reset_index(drop=True)
    return table.sort_values(key, ascending=not descending, na_position="last", kind="stable").reset_index(drop=True)


def _check_replicates(frame: Any, by: Sequence[str], over: str) -> None:
    if over not in frame.columns:
        raise ValueError(f"--over {over}: no such config value in these runs")
    # Config values, without per-run paths; metrics have a "/" in their names.
    config = [
        c
        for c in frame.columns
        if c not in (*RUN_COLUMNS, *by, over) and "/" not in c and not c.startswith("paths.") and not c.endswith("dirpath")
    ]
    for values, group in frame.groupby(list(by), dropna=False, sort=False):
        replicate = group[over].astype(str)
        # A value equal to the replicate key in every run is derived from it (data.seed: ${seed}).
        varying = [c for c in config if group[c].astype(str).nunique() > 1 and not (group[c].astype(str) == replicate).all()]
        if varying:
            label = values if not isinstance(values, tuple) else " / ".join(map(str, values))
            raise ValueError(
                f"--over {over}: the runs of {label} also differ in {', '.join(varying[:5])}; "
                f"add {'them' if len(varying) > 1 else 'it'} to --group-by, or narrow the runs with --sweep"
            )

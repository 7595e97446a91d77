"""sweeplab compare: rank the runs of an experiment (or one sweep) by a metric.

Prints a table of the runs with the config values that differ between them,
writes it as CSV, draws the metric per run (and against the swept value when
one numeric hyper-parameter varies) as PNG, and prints the command line that
reproduces the best run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from sweeplab.metrics.scores import lower_is_better
from sweeplab.record.tags import parse_overrides, reproduce_command
from sweeplab.reports.files import pyplot as _pyplot
from sweeplab.reports.results import load_runs


def differing_overrides(runs: Any) -> list[str]:
    """Add one column per command-line override key whose value differs between
    runs; return the column names. A run that did not type the key (a preset set
    it) shows the value it ran with: its param, or its config group's option."""
    parsed = parse_overrides(runs)
    for p, (_, row) in zip(parsed, runs.iterrows()):
        for key in {k for q in parsed for k in q} - set(p):
            for column in (f"params.{key}", f"tags.sweeplab.choice.{key}"):
                if isinstance(row.get(column), str):
                    p[key] = row[column]
                    break
    keys = sorted({k for p in parsed for k in p})
    differing = [k for k in keys if len({p.get(k, "") for p in parsed}) > 1]
    for key in differing:
        runs[f"override.{key}"] = [p.get(key, "") for p in parsed]
    return [f"override.{k}" for k in differing]


def rank(runs: Any, metric: str) -> Any:
    column = f"metrics.{metric}"
    if column not in runs.columns:
        available = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise ValueError(f"--metric {metric}: not logged by these runs; available: {', '.join(available)}")
    return runs.sort_values(column, ascending=lower_is_better(metric), na_position="last").reset_index(drop=True)


def _zoom(ax: Any, low: float, high: float) -> None:
    """Horizontal limits close around the values, so that differences show."""
    span = (high - low) or abs(high) or 1.0
    ax.set_xlim(low - 0.25 * span if low - 0.25 * span > 0 or low < 0 else 0, high + 0.15 * span)


PLOTTED_BARS = 40  # a bar per run up to this many (the best ones); the CSV and the scatter panel keep them all


def _plot(ranked: Any, metric: str, params: list[str], out: Path) -> Path:
    import pandas as pd

    plt = _pyplot()
    numeric = [p for p in params if pd.to_numeric(ranked[p], errors="coerce").notna().all()]
    panels = 2 if len(numeric) == 1 else 1
    shown = ranked.head(PLOTTED_BARS)
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, max(3, 0.35 * len(shown) + 1.5)), squeeze=False)
    ax = axes[0][0]
    if params:
        labels = [" / ".join(str(row[p]) for p in params) for _, row in shown.iterrows()][::-1]
    else:
        labels = shown["tags.mlflow.runName"].fillna(shown["run_id"].str[:8]).tolist()[::-1]
    values = shown[f"metrics.{metric}"].tolist()[::-1]
    ax.barh(range(len(values)), values, color=["tab:orange" if i == len(values) - 1 else "tab:blue" for i in range(len(values))])
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    _zoom(ax, min(values), max(values))
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.4f}", va="center", fontsize=7)
    if params:
        ax.set_ylabel(" / ".join(p.removeprefix("override.") for p in params))
    ax.set_xlabel(metric)
    which = f"the best {len(shown)} of {len(ranked)} runs" if len(shown) < len(ranked) else "per run"
    ax.set_title(f"{metric}, {which} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
    if panels == 2:
        x = pd.to_numeric(ranked[numeric[0]])
        axes[0][1].plot(x, ranked[f"metrics.{metric}"], "o")
        axes[0][1].set_xlabel(numeric[0].removeprefix("override."))
        axes[0][1].set_ylabel(metric)
        if x.min() > 0 and x.max() / x.min() > 50:
            axes[0][1].set_xscale("log")
        axes[0][1].set_title(f"{metric} vs {numeric[0].removeprefix('override.')}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_comparison(ranked: Any, params: list[str], metrics: list[str], experiment: str, out_dir: Path) -> tuple[Path, Path]:
    """The ranked runs' CSV (what differs, ``metrics``) and the PNG of the first metric."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = metrics[0]
    slug = metric.replace("/", "_")
    csv_path = out_dir / f"compare_{experiment}_{slug}.csv"
    columns = ["run_id", "tags.mlflow.runName", "status", *params, *[f"metrics.{m}" for m in metrics]]
    ranked[columns].rename(columns=lambda c: c.removeprefix("override.").removeprefix("tags.mlflow.")).to_csv(csv_path, index=False)
    png_path = _plot(ranked[ranked[f"metrics.{metric}"].notna()], metric, params, out_dir / f"compare_{experiment}_{slug}.png")
    return csv_path, png_path


def compare(
    uri: str,
    experiment: str,
    metric: str,
    sweep: str | None,
    out_dir: Path,
    extra: list[str],
    group_by: list[str] | None = None,
    over: str | None = None,
    tests: Tests | None = None,
) -> dict[str, Any]:
    """Rank, print, write CSV and PNG; return what was written and the best run.
    With ``group_by`` / ``over``: replicates aggregated (mean ± sd, n) instead,
    and with ``tests`` the best group tested against the others."""
    from rich.console import Console
    from rich.table import Table

    if tests is not None and (tests.significance or tests.rank) and not over:
        asked = "--significance" if tests.significance else "--rank"
        raise ValueError(f"{asked} needs --over <replicate key> (e.g. --over seed): the runs it pairs differ only in that key")
    if group_by or over:
        return compare_groups(uri, experiment, metric, sweep, out_dir, extra, list(group_by or []), over, tests)
    ranked = rank(load_runs(uri, experiment, sweep), metric)
    params = differing_overrides(ranked)
    all_metrics = [metric, *[m for m in extra if m != metric and f"metrics.{m}" in ranked.columns]]
    shown_metrics = list(all_metrics)
    console = Console()
    # Numbers are never cut: metric columns keep their full width, and extra
    # metrics that do not fit the terminal (80 columns in a pipe) are left to
    # the CSV; names wrap instead of ending in an ellipsis.
    cells = {m: [_format(row[f"metrics.{m}"]) for _, row in ranked.iterrows()] for m in shown_metrics}
    headers = {m: m.replace("/", "/\n", 1) for m in shown_metrics}
    headers.update({p: _break_dotted(p.removeprefix("override.")) for p in params})
    values = {p: [str(v) for v in ranked[p]] for p in params}
    values["status"] = list(ranked.status)
    if not params:  # the differing overrides say what a run is; its name only when nothing differs
        headers["run"] = "run"
        values["run"] = [str(row.get("tags.mlflow.runName") or row.run_id[:8]) for _, row in ranked.iterrows()]
    headers["status"] = "status"
    # Widths with padding and border: numbers in full; names at least their
    # longest header segment (and up to 12 characters of their values).
    need = {m: max(len(x) for x in [*headers[m].split("\n"), *cells[m]]) + 3 for m in shown_metrics}
    need.update({c: max([len(x) for x in headers[c].split("\n")] + [min(12, max(map(len, v)))]) + 3 for c, v in values.items()})
    fixed = 1 + len(str(len(ranked))) + 3 + sum(need[c] for c in values)
    dropped: list[str] = []
    while len(shown_metrics) > 1 and fixed + sum(need[m] for m in shown_metrics) > console.width:
        dropped.insert(0, shown_metrics.pop())
    console.print(f"{experiment}{' / sweep ' + sweep if sweep else ''}: ranked by {metric}", soft_wrap=True, style="bold")
    text_order = [*(["run"] if "run" in values else []), "status", *params]
    table = Table()
    table.add_column("#", justify="right", no_wrap=True)
    for column in text_order:
        table.add_column(headers[column], overflow="fold", min_width=need[column] - 3)
    for m in shown_metrics:
        table.add_column(headers[m], justify="right", no_wrap=True, min_width=need[m] - 3)
    for i in range(len(ranked)):
        table.add_row(str(i + 1), *[values[c][i] for c in text_order], *[cells[m][i] for m in shown_metrics])
    console.print(table)
    if dropped:
        console.print(f"(not shown at this width: {', '.join(dropped)}; all are in the CSV)")

    csv_path, png_path = write_comparison(ranked, params, all_metrics, experiment, out_dir)

    best = ranked.iloc[0]
    command = reproduce_command(best)
    console.print(f"best: run {best.run_id}, {metric} = {best[f'metrics.{metric}']:.4f}", soft_wrap=True)
    console.print(f"reproduce: {command}", soft_wrap=True)
    console.print(f"wrote {csv_path} and {png_path}", soft_wrap=True)
    return {"csv": csv_path, "png": png_path, "best_run_id": best.run_id, "command": command, "ranked": ranked}


def _break_dotted(name: str) -> str:
    """optimizer.lr -> "optimizer.\\nlr": a header that wraps between words, not inside one."""
    return name.replace(".", ".\n")


def _format(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="sweeplab", help="MLflow experiment name (default: sweeplab)")
    parser.add_argument("--sweep", default=None, help="only runs of this sweep id (tag sweeplab.sweep_id)")
    parser.add_argument("--metric", default="test/f1", help="metric to rank by (default: test/f1)")
    parser.add_argument(
        "--also",
        nargs="*",
        default=["test/f1", "test/accuracy", "test/precision", "test/recall", "test/mse", "test/r2", "val/loss"],
        help="further metrics to show when logged (default: the four test scores, test/mse, test/r2, val/loss)",
    )
    parser.add_argument("--store", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    parser.add_argument("--out", default="outputs/compare", help="folder for the CSV and PNG")
    parser.add_argument(
        "--group-by",
        nargs="+",
        default=None,
        metavar="KEY",
        help="aggregate runs by these config keys (e.g. optimizer, optimizer.lr): mean ± sd and n per group",
    )
    parser.add_argument(
        "--over",
        default=None,
        metavar="KEY",
        help="the replicate key (e.g. seed): runs differing only in it are averaged; alone, groups by everything else that differs",
    )

    parser.add_argument(
        "--significance",
        action="store_true",
        help="with --over: test the best group against each other group, paired on the replicates both have (CI, p, Holm, seeds needed)",
    )
    parser.add_argument("--test", choices=["t", "wilcoxon"], default="t", help="paired t-test (default) or Wilcoxon signed-rank")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level for the verdicts (default 0.05)")
    parser.add_argument(
        "--rank", action="store_true", help="with --over, 3+ groups: Friedman test, Nemenyi post-hoc, critical-difference diagram (PNG)"
    )


class Tests:
    """What compare tests on top of the group table (--significance, --test, --alpha, --rank)."""

    def __init__(self, significance: bool = False, test: str = "t", alpha: float = 0.05, rank: bool = False) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"--alpha {alpha}: must lie strictly between 0 and 1 (e.g. 0.05)")
        self.significance, self.test, self.alpha, self.rank = significance, test, alpha, rank


def run_from_args(args: argparse.Namespace) -> None:
    from sweeplab.record.tracking import default_tracking_uri, existing_store

    tests = Tests(args.significance, args.test, args.alpha, args.rank)
    compare(
        existing_store(args.store or default_tracking_uri()),
        args.experiment,
        args.metric,
        args.sweep,
        Path(args.out),
        args.also,
        args.group_by,
        args.over,
        tests,
    )


def compare_groups(
    uri: str,
    experiment: str,
    metric: str,
    sweep: str | None,
    out_dir: Path,
    extra: list[str],
    group_by: list[str],
    over: str | None,
    tests: Tests | None = None,
) -> dict[str, Any]:
    """Replicates as one row: each group's n and each metric's mean ± sd, ranked
    by the mean; the PNG draws the sd as error bars; the CSVs hold the
    aggregate and the runs. ``tests``: the significance table and the
    Friedman/Nemenyi ranking below it, in their own CSV and PNG."""
    from rich.console import Console
    from rich.table import Table

    from sweeplab.reports.results import flatten_runs, summarize

    raw = rank(load_runs(uri, experiment, sweep), metric)
    frame = flatten_runs(raw, parse_overrides(raw))
    if not group_by:  # --over alone: what differs between runs, except the replicate key
        group_by = [c.removeprefix("override.") for c in differing_overrides(raw.copy()) if c != f"override.{over}"]
        if not group_by:
            raise ValueError(
                f"--over {over}: the runs differ in nothing else; every run is a replicate of one config (use --group-by to name one)"
            )
    metrics = [metric, *[m for m in extra if m != metric and m in frame.columns]]
    table = summarize(frame[frame[metric].notna()], group_by, metrics, over=over, descending=not lower_is_better(metric))
    console = Console()
    console.print(
        f"{experiment}{' / sweep ' + sweep if sweep else ''}: {metric} over {over or 'runs'}, by {', '.join(group_by)} "
        f"(mean ± sd, ranked by the mean)",
        soft_wrap=True,
        style="bold",
    )
    shown = Table()
    shown.add_column("#", justify="right", no_wrap=True)
    for key in group_by:
        shown.add_column(_break_dotted(key), overflow="fold", min_width=max(len(str(v)) for v in table[key]))
    shown.add_column("n", justify="right", no_wrap=True)
    cells = {m: [f"{_sd(row[f'{m} mean'])} ± {_sd(row[f'{m} sd'])}" for _, row in table.iterrows()] for m in metrics}
    # Group names and the first metric always show; further metrics while the terminal has room (all are in the CSV).
    used = 4 + 6 + sum(max(len(str(v)) for v in [*_break_dotted(k).split("\n"), *table[k]]) + 3 for k in group_by)
    fits = []
    for m in metrics:
        width = max(len(c) for c in cells[m]) + 3
        if fits and used + width > console.width:
            break
        fits.append(m)
        used += width
    for m in fits:
        shown.add_column(m.replace("/", "/\n", 1), justify="right", no_wrap=True)
    for i, row in table.iterrows():
        cells_i = [cells[m][i] for m in fits]
        shown.add_row(str(i + 1), *[str(row[k]) for k in group_by], str(row["n"]), *cells_i)
    console.print(shown)
    if len(fits) < len(metrics):
        console.print(f"(not shown at this width: {', '.join(metrics[len(fits) :])}; all are in the CSV)")
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = f"{metric.replace('/', '_')}_by_{'_'.join(k.replace('.', '-') for k in group_by)}"
    csv_path = out_dir / f"compare_{experiment}_{slug}.csv"
    runs_path = out_dir / f"compare_{experiment}_{slug}_runs.csv"
    table.to_csv(csv_path, index=False)
    frame[["run_id", "status", *group_by, *([over] if over and over not in group_by else []), *metrics]].to_csv(runs_path, index=False)
    png_path = _plot_groups(table, metric, group_by, out_dir / f"compare_{experiment}_{slug}.png")
    best = table.iloc[0]
    console.print(
        f"best: {', '.join(f'{k}={best[k]}' for k in group_by)}: {metric} = {_sd(best[f'{metric} mean'])} ± {_sd(best[f'{metric} sd'])} "
        f"over {best['n']} run(s)",
        soft_wrap=True,
    )
    written = {"csv": csv_path, "runs_csv": runs_path, "png": png_path, "table": table}
    stem = out_dir / f"compare_{experiment}_{slug}"
    if tests is not None and tests.significance:
        written.update(_print_significance(console, frame, group_by, over, metric, tests, stem))
    if tests is not None and tests.rank:
        written.update(_print_ranks(console, frame, group_by, over, metric, tests, stem))
    console.print(f"wrote {', '.join(str(v) for v in written.values() if isinstance(v, Path))}", soft_wrap=True)
    return written


def _print_significance(console: Any, frame: Any, group_by: list[str], over: str, metric: str, tests: Tests, stem: Path) -> dict[str, Any]:
    """The significance table (sweeplab.significance) at the console's width, and as CSV."""
    from rich import box
    from rich.table import Table

    from sweeplab.reports.significance import significance

    result = significance(frame, group_by, over, metric, test=tests.test, alpha=tests.alpha)
    best = result["group"].iloc[0]
    kinds = sorted(set(result["test"]) - {"none"}, key=lambda k: k.startswith("Welch"))
    console.print(
        f"\nIs {' / '.join(group_by)} = {best} (the best mean {metric}) really better? Each other group against it, "
        f"paired over {over}: {' or '.join(kinds)}; p Holm-corrected over {len(result)} comparison(s), alpha {tests.alpha:g}",
        style="bold",
    )
    # The box's one space between columns, the verdict wrapped between words: the table fits 80 columns.
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 0), show_edge=False)
    longest = max(len(str(v)) for v in result["versus"])
    table.add_column("versus", overflow="fold", min_width=min(longest, 12))
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("diff", justify="right", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("p Holm", justify="right", no_wrap=True)
    table.add_column("verdict", min_width=len("not distinguishable"), max_width=len("not distinguishable"))
    table.add_column("seeds\nneeded", justify="right", no_wrap=True, min_width=len("needed"))
    for _, row in result.iterrows():
        tested = row["test"] != "none"
        table.add_row(
            str(row["versus"]),
            str(int(row["n"])),
            f"{row['mean_diff']:+.4f}" if tested else "-",
            f"{row['ci_low']:+.4f}..{row['ci_high']:+.4f}" if tested else "-",
            _p(row["p_value"]),
            _p(row["p_holm"]),
            str(row["verdict"]),
            "-" if math.isnan(row["n_needed"]) else str(int(row["n_needed"])),
        )
    console.print(table)
    if any(k.startswith("Welch") for k in kinds):
        console.print(f"(groups sharing no {over} value are compared unpaired, with Welch's t-test)", soft_wrap=True)
    console.print(
        "diff = best minus versus over the shared seeds; a verdict needs p Holm < alpha and a CI without 0. "
        "'Not distinguishable' is no evidence of equality: 'seeds needed' is how many a paired t-test needs "
        "for 80% power at the difference seen, after the correction (alpha / comparisons)."
    )
    path = Path(f"{stem}_significance.csv")
    result.to_csv(path, index=False)
    return {"significance_csv": path, "significance": result}


def _p(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2g}"


def _print_ranks(console: Any, frame: Any, group_by: list[str], over: str, metric: str, tests: Tests, stem: Path) -> dict[str, Any]:
    """Friedman + Nemenyi over the groups (autorank), and the critical-difference diagram."""
    from rich import box
    from rich.table import Table

    from sweeplab.reports.significance import draw_critical_difference, rank_groups

    result = rank_groups(frame, group_by, over, metric, alpha=tests.alpha)
    ranks = result.rankdf.sort_values("meanrank")  # rank 1 = the best value on a seed, in either direction
    best_rank = float(ranks["meanrank"].iloc[0])
    console.print(
        f"\nFriedman test over {len(ranks)} groups and {result.num_samples} {over} values: p = {result.pvalue:.3g}; "
        f"Nemenyi critical distance {result.cd:.3f} (alpha {tests.alpha:g}): groups whose mean ranks differ by less "
        "are not distinguishable",
        style="bold",
    )
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 0))
    table.add_column("#", justify="right")
    table.add_column(" / ".join(group_by), overflow="fold")
    table.add_column("mean rank", justify="right", no_wrap=True)
    table.add_column(f"median {metric}", justify="right", no_wrap=True)
    table.add_column("vs the first", overflow="fold")
    for i, (name, row) in enumerate(ranks.iterrows()):
        if i == 0:
            verdict = "-"
        elif result.pvalue >= tests.alpha:
            verdict = "not distinguishable (Friedman)"
        else:
            verdict = "worse" if float(row["meanrank"]) - best_rank > result.cd else "within CD"
        table.add_row(str(i + 1), str(name), f"{float(row['meanrank']):.2f}", f"{float(row['median']):.4f}", verdict)
    console.print(table)
    png = draw_critical_difference(result, metric, Path(f"{stem}_critical_difference.png"))
    return {"critical_difference_png": png}


def _sd(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _plot_groups(table: Any, metric: str, group_by: list[str], out: Path) -> Path:
    plt = _pyplot()
    rows = table.iloc[::-1]
    labels = [" / ".join(str(r[k]) for k in group_by) + f"  (n={r['n']})" for _, r in rows.iterrows()]
    means, sds = rows[f"{metric} mean"].to_numpy(), rows[f"{metric} sd"].fillna(0).to_numpy()
    fig, ax = plt.subplots(figsize=(7, max(3, 0.4 * len(rows) + 1.5)))
    colours = ["tab:orange" if i == len(rows) - 1 else "tab:blue" for i in range(len(rows))]
    ax.barh(range(len(rows)), means, xerr=sds, color=colours, capsize=3, error_kw={"elinewidth": 1})
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    _zoom(ax, float((means - sds).min()), float((means + sds).max()))
    ax.set_xlabel(f"{metric} (mean ± sd)")
    ax.set_ylabel(" / ".join(group_by))
    ax.set_title(f"{metric} by {', '.join(group_by)} ({'lower' if lower_is_better(metric) else 'higher'} is better)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

"""Is the best group really better? Paired tests, effect sizes and the seeds needed.

``significance(frame, by, over, metric)`` compares the best group (by the mean
of ``metric``, in its direction) with each other group, paired on the
replicate values (``over``, e.g. seed) both groups have: the mean difference
with its 95% interval, a paired t-test (``scipy.stats.ttest_rel``) or
Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``), Holm's correction over
the comparisons (``statsmodels``), a verdict, and the number of seeds a paired
t-test would need for 80% power at the effect observed (``TTestPower``).
Groups that share no replicate value are compared unpaired (Welch's t-test).
``rank_groups`` runs the Friedman test with the Nemenyi post-hoc (autorank)
over three or more groups measured on the same seeds.

The statistics come from the libraries; this module decides what is paired
with what and words the result. Frames are those of ``sweeplab.runs``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

from sweeplab.metrics.scores import lower_is_better

COLUMNS = ("group", "versus", "n", "mean_diff", "ci_low", "ci_high", "test", "p_value", "p_holm", "verdict", "n_needed")
TESTS = {"t": "paired t", "wilcoxon": "wilcoxon"}
WELCH = "Welch t (unpaired: no shared seeds)"
POWER = 0.8
CONFIDENCE = 0.95


def replicate_values(frame: Any, by: Sequence[str], over: str, metric: str) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(group labels in first-seen order, {label: {replicate value: metric}}), the runs
    whose metric is missing or NaN left out. Refuses a group with two runs of one
    replicate value: which of them would be the pair is not for this module to guess."""
    import pandas as pd

    missing = [k for k in [*by, over, metric] if k not in frame.columns]
    if missing:
        known = sorted(c for c in frame.columns if "/" in c)
        raise ValueError(f"{', '.join(missing)}: not a config value or metric of these runs (metrics: {', '.join(known[:12])})")
    if over in by:
        raise ValueError(f"--over {over} is also a --group-by key: the replicate key cannot define the groups")
    values = pd.to_numeric(frame[metric], errors="coerce")
    order: list[str] = []
    table: dict[str, dict[str, float]] = {}
    for i in range(len(frame)):
        label = group_label(frame.iloc[i], by)
        if label not in table:
            order.append(label)
            table[label] = {}
        value = values.iloc[i]
        if pd.isna(value):
            continue
        replicate = str(frame[over].iloc[i])
        if replicate in table[label]:
            raise ValueError(
                f"--over {over}: {label} has more than one run with {over}={replicate}; "
                "narrow the runs to one per replicate (--sweep, or a where filter) before testing"
            )
        table[label][replicate] = float(value)
    return order, table


def group_label(row: Any, by: Sequence[str]) -> str:
    return " / ".join(str(row[k]) for k in by)


def significance(
    frame: Any,
    by: Sequence[str] | str,
    over: str,
    metric: str,
    test: str = "t",
    alpha: float = 0.05,
    lower_better: bool | None = None,
) -> Any:
    """One row per comparison of the best group with another (``COLUMNS``), as a DataFrame.

    ``mean_diff`` is group minus versus over the shared replicates; ``ci_low``,
    ``ci_high`` its 95% interval; ``p_holm`` Holm's correction over the rows
    tested; ``verdict`` "better" or "worse" only when ``p_holm < alpha`` and the
    interval excludes 0; ``n_needed`` the seeds (pairs) a t-test needs for 80% power at the
    observed effect and alpha over the number of comparisons (so that Holm's correction
    would not undo it), blank (NaN) when the difference is 0. A comparison with
    fewer than 2 pairs is kept, untested, with a verdict saying how many seeds
    it lacks; when no comparison can be tested the call is refused in one line.
    """
    import numpy as np
    import pandas as pd

    if test not in TESTS:
        raise ValueError(f"--test {test}: unknown; choose one of {', '.join(TESTS)}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"--alpha {alpha}: must lie strictly between 0 and 1 (e.g. 0.05)")
    lower_better, table, scored = _scored_groups(frame, by, over, metric, lower_better, 2, "--significance", "")
    means = {g: float(np.mean(list(table[g].values()))) for g in scored}
    sign = 1 if lower_better else -1
    best = min(scored, key=lambda g: (sign * means[g], g))  # equal means: the first label in order, whatever the store's order
    others = sorted((g for g in scored if g != best), key=lambda g: (sign * means[g], g))  # the closest competitor first
    rows = [_compare(best, other, table[best], table[other], test, alpha, lower_better, over) for other in others]
    result = pd.DataFrame(rows, columns=[*COLUMNS, "spread", "paired"]).astype({"verdict": object, "test": object})
    tested = result["p_value"].notna()
    # Seeds for 80% power at alpha / comparisons (Bonferroni, which Holm never asks more than): with that many,
    # a difference of the size seen would be declared after the correction, not only in a test on its own.
    for i in result.index[tested]:
        row = result.loc[i]
        result.loc[i, "n_needed"] = _seeds_needed(row.mean_diff, row.spread, alpha / int(tested.sum()), paired=bool(row.paired))
    result = result.drop(columns=["spread", "paired"])
    if not tested.any():
        pairs = ", ".join(f"{r.versus} {r.n}" for r in result.itertuples())
        raise ValueError(
            f"--significance: too few seeds to test: {best} shares fewer than 2 {over} values with results with every other group "
            f"({pairs}); run at least {2 - int(result['n'].max())} more {over} value(s) for each group"
        )
    from statsmodels.stats.multitest import multipletests

    result.loc[tested, "p_holm"] = multipletests(result.loc[tested, "p_value"].to_numpy(), alpha=alpha, method="holm")[1]
    for i in result.index[tested]:
        row = result.loc[i]
        if row.p_holm < alpha and (row.ci_low > 0 or row.ci_high < 0):
            result.loc[i, "verdict"] = "better" if (row.mean_diff < 0) == lower_better else "worse"
        else:
            result.loc[i, "verdict"] = f"not distinguishable with n={row.n}"
    return result


def _scored_groups(
    frame: Any, by: Sequence[str] | str, over: str, metric: str, lower_better: bool | None, least: int, flag: str, hint: str
) -> tuple[bool, dict[str, dict[str, float]], list[str]]:
    """(direction, {group: {replicate: value}}, the groups with a value), refused in one line with fewer than ``least``."""
    by = [by] if isinstance(by, str) else list(by)
    order, table = replicate_values(frame, by, over, metric)
    groups = [g for g in order if table[g]]
    if len(groups) < least:
        raise ValueError(f"{flag}: needs at least {least} groups with a {metric} value; found {len(groups)} ({', '.join(groups)}){hint}")
    return (lower_is_better(metric) if lower_better is None else lower_better), table, groups


def _compare(
    group: str, versus: str, a: dict[str, float], b: dict[str, float], test: str, alpha: float, lower_better: bool, over: str
) -> dict[str, Any]:
    import numpy as np
    import scipy.stats as st

    shared = [r for r in a if r in b]
    row: dict[str, Any] = dict.fromkeys(COLUMNS, np.nan)
    row.update(group=group, versus=versus)
    if len(shared) >= 2:
        x, y = np.array([a[r] for r in shared]), np.array([b[r] for r in shared])
        diff = x - y
        with warnings.catch_warnings():  # a constant difference: scipy warns, and answers t = inf, p = 0
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = st.ttest_rel(x, y).confidence_interval(CONFIDENCE)
            if not diff.any():
                p = 1.0  # identical results on every seed: no evidence of a difference (scipy's 0/0 is NaN)
            elif test == "wilcoxon":
                p = float(st.wilcoxon(x, y).pvalue)
            else:
                p = float(st.ttest_rel(x, y).pvalue)
        sd = float(np.std(diff, ddof=1))
        row.update(
            n=len(shared),
            mean_diff=float(diff.mean()),
            ci_low=float(interval.low),
            ci_high=float(interval.high),
            test=TESTS[test],
            p_value=p,
            spread=sd,
            paired=True,
        )
        return row
    if not shared and len(a) >= 2 and len(b) >= 2:
        x, y = np.array(list(a.values())), np.array(list(b.values()))
        welch = st.ttest_ind(x, y, equal_var=False)
        interval = welch.confidence_interval(CONFIDENCE)
        pooled = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
        row.update(
            n=min(len(x), len(y)),
            mean_diff=float(x.mean() - y.mean()),
            ci_low=float(interval.low),
            ci_high=float(interval.high),
            test=WELCH,
            p_value=float(welch.pvalue) if not math.isnan(welch.pvalue) else 1.0,
            spread=pooled,
            paired=False,
        )
        return row
    lacking = 2 - len(shared)
    row.update(
        n=len(shared),
        test="none",
        verdict=f"untested: {len(shared)} shared {over}; needs {lacking} more in both",
    )
    return row


def _seeds_needed(mean_diff: float, sd: float, alpha: float, paired: bool) -> float:
    """The smallest number of seeds (pairs; runs per group when unpaired), at least 2, at
    which a two-sided t-test has 80% power for this effect (statsmodels' power
    functions); NaN when the difference is 0, or when even 100,000 would not do."""
    import numpy as np

    if mean_diff == 0:
        return math.nan
    if sd <= 1e-12 * max(1.0, abs(mean_diff)):  # constant up to float rounding (0.92 - 0.87 is not exactly 0.05)
        return 2.0  # a constant, non-zero difference: the smallest sample a t-test is defined on
    from statsmodels.stats.power import TTestIndPower, TTestPower

    effect = abs(mean_diff) / sd
    power = TTestPower().power if paired else TTestIndPower().power
    low = 2
    for high in (64, 4096, 100_000):  # a few vectorised passes instead of a root finder that fails below n = 2
        sizes = np.arange(low, high + 1)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            enough = np.flatnonzero(np.asarray(power(effect, sizes, alpha, alternative="two-sided")) >= POWER)
        if enough.size:
            return float(sizes[enough[0]])
        low = high + 1
    return math.nan


def rank_groups(frame: Any, by: Sequence[str] | str, over: str, metric: str, alpha: float = 0.05, lower_better: bool | None = None) -> Any:
    """Friedman test and Nemenyi post-hoc (autorank) over three or more groups on the
    replicate values every group has: autorank's RankResult (rankdf with each group's
    mean rank, pvalue of the Friedman test, cd the critical distance)."""
    import contextlib
    import io

    import pandas as pd

    lower_better, table, groups = _scored_groups(
        frame, by, over, metric, lower_better, 3, "--rank", " (for two, --significance tests them)"
    )
    shared = [r for r in table[groups[0]] if all(r in table[g] for g in groups)]
    if len(shared) < 5:
        raise ValueError(
            f"--rank: the Friedman test needs at least 5 {over} values that every group has (autorank's minimum); "
            f"these {len(groups)} groups share {len(shared)} ({', '.join(shared) or 'none'}): run {5 - len(shared)} more"
        )
    data = pd.DataFrame({g: [table[g][r] for r in shared] for g in groups})
    from autorank import autorank

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # autorank prints that the mode is forced
        warnings.simplefilter("ignore")
        return autorank(
            data, alpha=float(alpha), verbose=False, order="ascending" if lower_better else "descending", force_mode="nonparametric"
        )


def draw_critical_difference(result: Any, metric: str, path: Any) -> Any:
    """autorank's critical-difference diagram of ``rank_groups``' result, as a PNG."""
    from autorank import plot_stats

    from sweeplab.reports.files import pyplot

    plt = pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plot_stats(result, allow_insignificant=True, width=7)
    fig = ax.get_figure()
    # Below the diagram: above it autorank draws the CD bar and its label.
    fig.text(
        0.5, 0.0, f"{metric}: mean rank, 1 = best (Friedman p={result.pvalue:.3g}, Nemenyi CD={result.cd:.2f})", ha="center", fontsize=9
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

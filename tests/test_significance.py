"""sweeplab compare --significance / --rank and sweeplab.significance, on a store of known numbers.

Every column is recomputed here with scipy and statsmodels on the same values."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower

BASE = [0.90, 0.92, 0.91, 0.93, 0.94]
# optimizer -> {seed: test/f1}; val/loss is 1 - test/f1 (a minimised metric with the same story).
KNOWN = {
    "adam": dict(zip("12345", BASE)),
    "adamw": dict(zip("12345", BASE)),  # a tie with adam: every difference 0
    "sgd": {s: v - 0.05 for s, v in zip("12345", BASE)},  # a constant difference: sd 0
    "rmsprop": {"1": 0.89, "2": 0.93, "3": math.nan, "4": 0.90, "5": 0.92},  # seed 3's metric is NaN
    "adagrad": {"1": 0.88, "2": 0.90, "3": 0.87, "4": 0.91},  # seed 5 missing
    "adadelta": {"1": 0.80, "2": 0.83},  # n = 2
    "asgd": {"1": 0.85},  # one pair only: untested
    "lbfgs": {"11": 0.86, "12": 0.84, "13": 0.88},  # no seed shared with the others: Welch
}


def _fill(uri: str, experiment: str, known: dict[str, dict[str, float]]) -> None:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment(experiment)
    for optimizer, values in known.items():
        for seed, value in values.items():
            run = client.create_run(exp, tags={"sweeplab.overrides": f"optimizer={optimizer} seed={seed}"}, run_name=f"{optimizer}-{seed}")
            client.log_param(run.info.run_id, "seed", seed)
            if not math.isnan(value):
                client.log_metric(run.info.run_id, "test/f1", value)
                client.log_metric(run.info.run_id, "val/loss", 1 - value)
            else:
                client.log_metric(run.info.run_id, "test/f1", value)
            client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def known_store(tmp_path_factory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("significance")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    _fill(uri, "known", KNOWN)
    rng = np.random.default_rng(0)  # 4 configs on 6 shared seeds, for the Friedman ranking
    ranked = {name: {str(s): 0.9 + shift + 0.01 * rng.standard_normal() for s in range(1, 7)} for name, shift in
              [("adam", 0.03), ("sgd", 0.0), ("rmsprop", 0.01), ("adagrad", -0.03)]}  # fmt: skip
    _fill(uri, "ranked", ranked)
    return folder, uri


def _compare(folder: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("sweeplab")
    return subprocess.run(
        [str(exe), "compare", "--store", f"sqlite:///{folder / 'mlflow.db'}", "--out", str(folder / "cmp"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={"COLUMNS": str(columns), "PATH": "/usr/bin:/bin"},
    )


def _pairs(best: str, other: str, known: dict[str, dict[str, float]]) -> tuple[np.ndarray, np.ndarray]:
    shared = [s for s in known[best] if s in known[other] and not math.isnan(known[best][s]) and not math.isnan(known[other][s])]
    return np.array([known[best][s] for s in shared]), np.array([known[other][s] for s in shared])


def _smallest_n(analysis, effect: float, alpha: float) -> int:
    """The smallest n >= 2 with 80% power, one n at a time (a power statsmodels cannot compute, NaN, is not enough)."""
    n = 2
    while not analysis.power(effect, n, alpha) >= 0.8:
        n += 1
    return n


def _expected(known: dict[str, dict[str, float]], best: str, test: str, lower: bool) -> pd.DataFrame:
    """The table as scipy and statsmodels give it, row by row."""
    rows = []
    tested = sum(len(_pairs(best, o, known)[0]) != 1 for o in known if o != best)  # 2+ pairs, or none (Welch)
    alpha = 0.05 / tested  # seeds needed at Bonferroni's level over the comparisons tested
    for other in sorted(g for g in known if g != best):
        x, y = _pairs(best, other, known)
        if lower:
            x, y = 1 - x, 1 - y
        row = {"versus": other, "n": len(x)}
        if len(x) >= 2:
            d = x - y
            ci = st.ttest_rel(x, y).confidence_interval(0.95)
            if not d.any():
                p = 1.0
            else:
                p = st.wilcoxon(x, y).pvalue if test == "wilcoxon" else st.ttest_rel(x, y).pvalue
            sd = np.std(d, ddof=1)
            if d.mean() == 0:
                needed = math.nan
            elif sd < 1e-12:
                needed = 2
            else:
                needed = _smallest_n(TTestPower(), abs(d.mean()) / sd, alpha)
            row.update(mean_diff=d.mean(), ci_low=ci.low, ci_high=ci.high, p_value=p, n_needed=needed, test="paired")
        elif len(x) == 0:
            a = np.array([v for v in known[best].values() if not math.isnan(v)])
            b = np.array(list(known[other].values()))
            if lower:
                a, b = 1 - a, 1 - b
            welch = st.ttest_ind(a, b, equal_var=False)
            ci = welch.confidence_interval(0.95)
            pooled = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
            needed = _smallest_n(TTestIndPower(), abs(a.mean() - b.mean()) / pooled, alpha)
            row.update(
                n=min(len(a), len(b)),
                mean_diff=a.mean() - b.mean(),
                ci_low=ci.low,
                ci_high=ci.high,
                p_value=welch.pvalue,
                n_needed=needed,
                test="Welch",
            )
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("versus")
    tested = frame["p_value"].notna()
    frame.loc[tested, "p_holm"] = multipletests(frame.loc[tested, "p_value"], method="holm")[1]
    return frame


@pytest.mark.parametrize("test", ["t", "wilcoxon"])
def test_every_column_matches_scipy_and_statsmodels(known_store, test: str) -> None:
    import sweeplab

    folder, uri = known_store
    df = sweeplab.runs(experiment="known", store=uri)
    got = sweeplab.significance(df, by="optimizer", over="seed", metric="test/f1", test=test).set_index("versus")
    assert set(got["group"]) == {"adam"}  # adam and adamw tie on the mean: the first label
    want = _expected(KNOWN, "adam", test, lower=False)
    assert sorted(got.index) == sorted(want.index)
    for other, row in want.iterrows():
        mine = got.loc[other]
        assert mine["n"] == row["n"], other
        for column in ("mean_diff", "ci_low", "ci_high", "p_value", "p_holm"):
            if pd.isna(row.get(column)):
                assert pd.isna(mine[column]), (other, column)
            else:
                assert mine[column] == pytest.approx(row[column], rel=1e-9, abs=1e-12), (other, column)
        if pd.isna(row.get("n_needed")):
            assert pd.isna(mine["n_needed"]), other
        else:
            assert mine["n_needed"] == row["n_needed"], other
    # The cases by name: a tie, a constant difference, a NaN metric, a missing seed, n=2, one pair, no shared seed.
    assert got.loc["adamw", "p_value"] == 1.0 and got.loc["adamw", "verdict"] == "not distinguishable with n=5"
    assert got.loc["adamw", "mean_diff"] == 0 and pd.isna(got.loc["adamw", "n_needed"])
    assert got.loc["sgd", "n_needed"] == 2 and got.loc["sgd", "ci_low"] == pytest.approx(0.05)
    assert got.loc["rmsprop", "n"] == 4 and got.loc["adagrad", "n"] == 4 and got.loc["adadelta", "n"] == 2
    assert got.loc["asgd", "test"] == "none" and got.loc["asgd", "verdict"] == "untested: 1 shared seed; needs 1 more in both"
    assert got.loc["lbfgs", "test"].startswith("Welch") and got.loc["lbfgs", "n"] == 3
    expected_test = "paired t" if test == "t" else "wilcoxon"
    assert set(got.loc[["adamw", "sgd", "rmsprop", "adagrad", "adadelta"], "test"]) == {expected_test}


def test_verdicts_need_holm_and_an_interval_without_zero(known_store) -> None:
    import sweeplab

    folder, uri = known_store
    got = sweeplab.significance(sweeplab.runs(experiment="known", store=uri), by=["optimizer"], over="seed", metric="test/f1")
    got = got.set_index("versus")
    for other, row in got.iterrows():
        if row["test"] == "none":
            continue
        decided = row["p_holm"] < 0.05 and (row["ci_low"] > 0 or row["ci_high"] < 0)
        assert row["verdict"] == ("better" if decided else f"not distinguishable with n={row['n']}"), other
    assert got.loc["sgd", "verdict"] == "better"  # 0.05 on every seed
    # adagrad: 0.02-0.04 lower on 4 seeds, p about 0.015 alone; Holm over 6 comparisons lifts it past alpha.
    assert got.loc["adagrad", "p_value"] < 0.05 < got.loc["adagrad", "p_holm"]
    assert got.loc["adagrad", "verdict"] == "not distinguishable with n=4"
    # Wilcoxon on 5 pairs cannot go below p = 0.0625: nothing is declared at alpha 0.05.
    wil = sweeplab.significance(
        sweeplab.runs(experiment="known", store=uri), by="optimizer", over="seed", metric="test/f1", test="wilcoxon"
    )
    assert not (wil["verdict"] == "better").any()


def test_a_minimised_metric_picks_the_lowest_and_signs_the_difference(known_store) -> None:
    import sweeplab

    folder, uri = known_store
    got = sweeplab.significance(sweeplab.runs(experiment="known", store=uri), by="optimizer", over="seed", metric="val/loss")
    got = got.set_index("versus")
    assert set(got["group"]) == {"adam"}  # lowest loss
    want = _expected(KNOWN, "adam", "t", lower=True)
    assert got.loc["sgd", "mean_diff"] == pytest.approx(-0.05) and got.loc["sgd", "verdict"] == "better"
    for other in ("rmsprop", "adagrad", "lbfgs"):
        assert got.loc[other, "mean_diff"] == pytest.approx(want.loc[other, "mean_diff"])
        assert got.loc[other, "p_holm"] == pytest.approx(want.loc[other, "p_holm"])


def test_bad_requests_are_one_line_naming_the_value() -> None:
    import sweeplab

    frame = pd.DataFrame({"optimizer": ["a", "a", "b", "b"], "seed": [1, 1, 1, 2], "test/f1": [0.9, 0.8, 0.7, 0.6]})
    with pytest.raises(ValueError, match=r"a has more than one run with seed=1"):
        sweeplab.significance(frame, by="optimizer", over="seed", metric="test/f1")
    with pytest.raises(ValueError, match=r"--test z: unknown; choose one of t, wilcoxon"):
        sweeplab.significance(frame, by="optimizer", over="seed", metric="test/f1", test="z")
    with pytest.raises(ValueError, match=r"--alpha 1.5"):
        sweeplab.significance(frame, by="optimizer", over="seed", metric="test/f1", alpha=1.5)
    with pytest.raises(ValueError, match=r"test/auc: not a config value or metric"):
        sweeplab.significance(frame, by="optimizer", over="seed", metric="test/auc")
    only_one = pd.DataFrame({"optimizer": ["a", "b"], "seed": [1, 1], "test/f1": [0.9, 0.8]})
    with pytest.raises(ValueError, match=r"too few seeds to test: a shares fewer than 2 seed values .* \(b 1\); run at least 1 more"):
        sweeplab.significance(only_one, by="optimizer", over="seed", metric="test/f1")


@pytest.mark.slow
def test_the_console_script_at_80_columns_prints_and_writes_the_table(known_store) -> None:
    folder, uri = known_store
    result = _compare(folder, "--experiment", "known", "--group-by", "optimizer", "--over", "seed", "--significance")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Is optimizer = adam"))
    # Everything printed but the file paths (kept on one line to be copied whole) fits 80 columns.
    assert max(len(line) for line in lines if not line.startswith("wrote ")) <= 80 and "…" not in result.stdout
    body = "\n".join(lines[start:])
    assert "best: optimizer=adam:" in result.stdout  # the group table and the tests agree on the best of a tie
    csv = pd.read_csv(folder / "cmp" / "compare_known_test_f1_by_optimizer_significance.csv")
    assert list(csv.columns) == [
        "group",
        "versus",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "test",
        "p_value",
        "p_holm",
        "verdict",
        "n_needed",
    ]
    import sweeplab

    expected = sweeplab.significance(sweeplab.runs(experiment="known", store=uri), by="optimizer", over="seed", metric="test/f1")
    pd.testing.assert_frame_equal(csv, expected, check_dtype=False)
    for _, row in csv.iterrows():  # every row's numbers in full on the console
        assert row["versus"] in body
        if row["test"] != "none":
            assert f"{row['mean_diff']:+.4f}" in body and f"{row['p_holm']:.2g}" in body
    assert "better" in body and "Welch" in body


@pytest.mark.slow
def test_the_console_script_refuses_missing_over_and_too_few_seeds_to_rank(known_store) -> None:
    folder, _ = known_store
    no_over = _compare(folder, "--experiment", "known", "--group-by", "optimizer", "--significance")
    assert no_over.returncode == 1
    assert no_over.stderr.strip().splitlines()[-1] == (
        "sweeplab: error: --significance needs --over <replicate key> (e.g. --over seed): the runs it pairs differ only in that key"
    )
    bad_test = _compare(folder, "--experiment", "known", "--group-by", "optimizer", "--over", "seed", "--significance", "--test", "z")
    assert bad_test.returncode == 2 and "invalid choice: 'z' (choose from 't', 'wilcoxon')" in bad_test.stderr
    few = _compare(folder, "--experiment", "known", "--group-by", "optimizer", "--over", "seed", "--rank")
    assert few.returncode == 1
    assert "--rank: the Friedman test needs at least 5 seed values that every group has" in few.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_rank_runs_friedman_and_nemenyi_and_draws_the_diagram(known_store) -> None:
    import mlflow

    folder, uri = known_store
    result = _compare(folder, "--experiment", "ranked", "--group-by", "optimizer", "--over", "seed", "--rank", "--significance")
    assert result.returncode == 0, result.stderr
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["ranked"])
    runs["optimizer"] = runs["tags.sweeplab.overrides"].str.extract(r"optimizer=(\w+)")[0]
    table = runs.pivot(index="params.seed", columns="optimizer", values="metrics.test/f1")
    friedman = st.friedmanchisquare(*table.T.to_numpy())
    text = " ".join(result.stdout.split())  # headings wrap at the terminal's width
    assert f"p = {friedman.pvalue:.3g}" in text
    # Nemenyi's critical distance: q_alpha(k) * sqrt(k (k + 1) / (6 n)), q for k = 4 at alpha 0.05 is 2.569 (Demšar 2006, table 5).
    cd = 2.569 * math.sqrt(4 * 5 / (6 * 6))
    assert f"critical distance {cd:.3f}" in text
    ranks = table.rank(axis=1, ascending=False).mean()
    first = next(line for line in result.stdout.splitlines() if line.strip().startswith("1 "))
    assert ranks.idxmin() in first and f"{ranks.min():.2f}" in first
    assert (folder / "cmp" / "compare_ranked_test_f1_by_optimizer_critical_difference.png").stat().st_size > 5000

"""Right answers on a user's own data: regression targets in their own units,
regressors for every classical family, tables in any common format, and
test predictions a person can trace back to their rows and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from sweeplab.config import compose

from conftest import cli, runs_of, saved_predictions, store_overrides, train_in_process


@pytest.fixture(scope="module")
def grunfeld(tmp_path_factory) -> Path:
    """statsmodels' Grunfeld investment data (220 rows), a table sweeplab has never seen."""
    from statsmodels.datasets import grunfeld

    path = tmp_path_factory.mktemp("tables") / "grunfeld.csv"
    grunfeld.load_pandas().data.to_csv(path, index=False)
    return path


def _datamodule(overrides: list[str]):
    import hydra
    from hydra.errors import InstantiationException

    try:
        dm = hydra.utils.instantiate(compose(overrides).data)
    except InstantiationException as exc:  # the data module's own error, as the CLI reports it
        raise exc.__cause__ from None
    dm.setup()
    return dm


# -- 1. regression targets --------------------------------------------------------
def test_regression_target_is_standardised_with_train_statistics_and_converted_back(grunfeld: Path) -> None:
    dm = _datamodule(["data=csv", f"data.path={grunfeld}", "data.target=invest"])
    mean, std = dm.target_scale_
    raw = pd.read_csv(grunfeld)["invest"].to_numpy()
    train_raw = raw[dm.ids["train"]]
    assert (mean, std) == pytest.approx((train_raw.mean(), train_raw.std()))
    y_train = dm.arrays("train")[1]
    assert y_train.mean() == pytest.approx(0, abs=1e-5) and y_train.std() == pytest.approx(1, abs=1e-5)
    for split in ("train", "val", "test"):  # ids lead back to the file's rows
        np.testing.assert_allclose(dm.unscale_target(dm.arrays(split)[1]), raw[dm.ids[split]], rtol=1e-5)


def test_csv_regression_learns_and_reports_in_the_targets_units(grunfeld: Path, store, tmp_path: Path) -> None:
    """Unscaled, the default MLP predicted 5-20 against investments up to 1300 (test R2 -0.26)."""
    run_dir = tmp_path / "run"
    overrides = ["data=csv", f"data.path={grunfeld}", "data.target=invest", "trainer.max_epochs=30", *store_overrides(store)]
    metrics = train_in_process(overrides, run_dir)
    assert metrics["test/r2"] > 0.85 and metrics["train/r2"] > 0.85
    saved = pd.read_csv(run_dir / "test_predictions.csv")
    raw = pd.read_csv(grunfeld)
    np.testing.assert_allclose(saved["y_true"], raw["invest"].to_numpy()[saved["row"]], rtol=1e-6)
    assert saved["y_pred"].max() > 200  # predictions in dollars, not in standard deviations
    run = runs_of(store["uri"]).iloc[0]
    assert run["metrics.test/mse"] == pytest.approx(mean_squared_error(saved["y_true"], saved["y_pred"]), rel=1e-5)
    assert run["metrics.test/mae"] == pytest.approx(mean_absolute_error(saved["y_true"], saved["y_pred"]), rel=1e-5)
    assert run["metrics.test/r2"] == pytest.approx(r2_score(saved["y_true"], saved["y_pred"]), abs=1e-5)
    assert (run_dir / "predicted_vs_true.png").stat().st_size > 5000


def test_series_metrics_are_in_the_series_units(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = train_in_process(["data=sunspots", "model=linear_regression", "logger=none"], run_dir)
    saved = pd.read_csv(run_dir / "test_predictions.csv")
    from statsmodels.datasets import sunspots

    raw = sunspots.load_pandas().data.set_index("YEAR")["SUNACTIVITY"]
    np.testing.assert_allclose(saved["y_true"], raw.loc[saved["year"].astype(float)].to_numpy(), rtol=1e-5)
    assert list(saved["year"]) == sorted(saved["year"]) and saved["year"].iloc[-1] == 2008
    assert metrics["test/mae"] == pytest.approx(mean_absolute_error(saved["y_true"], saved["y_pred"]), rel=1e-5)
    assert metrics["test/mae"] > 5  # sunspot numbers, not standard deviations


def test_a_series_run_limited_to_its_first_test_batches_still_reports_over_time(tmp_path: Path) -> None:
    """Predictions and the forecast plot take the ids of the samples actually tested."""
    run_dir = tmp_path / "run"
    overrides = ["data=sunspots", "model=rnn", "data.batch_size=8", "+trainer.limit_test_batches=1", "trainer.max_epochs=1"]
    train_in_process([*overrides, "logger=none", "callbacks=none"], run_dir)
    saved = pd.read_csv(run_dir / "test_predictions.csv")
    assert len(saved) == 8 and list(saved["year"]) == sorted(saved["year"])
    assert (run_dir / "forecast.png").stat().st_size > 5000


# -- 2. regressors for every classical family ------------------------------------
REGRESSORS = {
    "knn": "sklearn.neighbors.KNeighborsRegressor",
    "svm": "sklearn.svm.SVR",
    "decision_tree": "sklearn.tree.DecisionTreeRegressor",
    "random_forest": "sklearn.ensemble.RandomForestRegressor",
}


@pytest.mark.parametrize("model", sorted(REGRESSORS))
def test_classical_families_regress_on_regression_data(model: str, store, tmp_path: Path) -> None:
    import hydra

    extra = ["model.n_estimators=20"] if model == "random_forest" else []
    metrics = train_in_process([f"model={model}", "data=diabetes", *extra, *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    assert run.status == "FINISHED" and run["tags.sweeplab.task"] == "regression"
    assert run["params.model._target_"] == REGRESSORS[model]
    # The same regressor fitted by hand on the same split (standardised target), scored in the target's units.
    dm = _datamodule(["data=diabetes"])
    params = (
        {"n_estimators": 20, "random_state": 42} if model == "random_forest" else {"random_state": 42} if model == "decision_tree" else {}
    )
    estimator = hydra.utils.get_class(REGRESSORS[model])(**params)
    (x_train, y_train), (x_test, y_test) = dm.arrays("train"), dm.arrays("test")
    pred = dm.unscale_target(estimator.fit(x_train, y_train).predict(x_test))
    assert metrics["test/r2"] == pytest.approx(r2_score(dm.unscale_target(y_test), pred), abs=1e-6)
    assert metrics["test/mse"] == pytest.approx(mean_squared_error(dm.unscale_target(y_test), pred), rel=1e-6)


def test_a_classification_only_setting_on_regression_data_is_one_line(store, tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"model=(decision_tree|DecisionTreeClassifier): The .criterion. parameter of DecisionTreeRegressor must be .*Got .entropy.",
    ):
        train_in_process(["model=decision_tree", "data=diabetes", "model.criterion=entropy", *store_overrides(store)], tmp_path / "run")
    assert not (Path(store["outputs"]) / "mlflow.db").exists() or runs_of(store["uri"]).empty


@pytest.mark.slow
def test_one_sweep_over_classical_and_deep_models_on_regression_data(tmp_path: Path) -> None:
    args = ["-m", "data=diabetes", "model=svm,random_forest,mlp", "trainer.max_epochs=5", "callbacks=none", "experiment_name=regressors"]
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}", "regressors")
    assert set(runs.status) == {"FINISHED"} and len(runs) == 3
    assert not runs["tags.mlflow.runName"].str.contains("experiment_name").any()  # the experiment already holds them
    assert (runs["metrics.test/r2"] > 0.2).all()


# -- 7. tables in other formats --------------------------------------------------
@pytest.mark.parametrize(
    "name,write",
    [
        ("table.txt", lambda f, p: f.to_csv(p, sep=";", index=False)),
        ("table.tsv", lambda f, p: f.to_csv(p, sep="\t", index=False)),
        ("table.csv", lambda f, p: f.to_csv(p, sep="|", index=False)),
        ("table.json", lambda f, p: f.to_json(p, orient="records")),
        ("table.jsonl", lambda f, p: f.to_json(p, orient="records", lines=True)),
        ("table.parquet", lambda f, p: f.to_parquet(p)),
    ],
)
def test_tables_in_other_formats_read_like_the_csv(name: str, write, grunfeld: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(grunfeld)
    write(frame, tmp_path / name)
    reference = _datamodule(["data=csv", f"data.path={grunfeld}", "data.target=invest"])
    other = _datamodule(["data=csv", f"data.path={tmp_path / name}", "data.target=invest"])
    for split in ("train", "test"):
        np.testing.assert_allclose(other.arrays(split)[0], reference.arrays(split)[0], rtol=1e-6)
        np.testing.assert_array_equal(other.ids[split], reference.ids[split])


@pytest.mark.parametrize(
    "name,content,overrides,message",
    [
        ("records.csv", '[{"a": 1, "b": 2}]', [], r"looks like JSON, not delimited text; name the file \.json"),
        ("table.xlsx", "PK\x03\x04", [], r"unknown table format '\.xlsx'; sweeplab reads csv, tsv, .*json, jsonl, parquet"),
        (
            "semi.csv",
            "a;b;c\n1;2;3\n",
            ["data.sep=','"],
            r"no such column in semi.csv; columns: a;b;c; the file seems separated by ';': set data.sep=';'",
        ),
        (
            "inf.csv",
            "x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(11)) + "inf,1\n",
            [],
            r"missing or infinite values in x; set data.missing=",
        ),
    ],
)
def test_a_table_sweeplab_cannot_read_is_named_at_once(name: str, content: str, overrides, message: str, tmp_path: Path) -> None:
    (tmp_path / name).write_text(content)
    target = "b" if name == "records.csv" else "c" if name == "semi.csv" else "y"
    with pytest.raises(ValueError, match=message):
        _datamodule(["data=csv", f"data.path={tmp_path / name}", f"data.target={target}", *overrides])


def test_infinite_features_follow_the_missing_value_rule(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 2}\n" for i in range(20))
    (tmp_path / "t.csv").write_text("x,y\n" + rows + "-inf,0\n")
    dm = _datamodule(["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.missing=drop"])
    assert sum(len(dm.ids[s]) for s in dm.ids) == 20 and 20 not in np.concatenate(list(dm.ids.values()))


def test_a_missing_target_is_dropped_with_its_row(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 2}\n" for i in range(20))
    (tmp_path / "t.csv").write_text("x,y\n" + rows + "5,\n")
    dm = _datamodule(["data=csv", f"data.path={tmp_path / 't.csv'}", "data.target=y", "data.missing=drop"])
    kept = np.concatenate(list(dm.ids.values()))
    assert sorted(kept) == list(range(20))  # row 20 (no target) is gone, the others keep their row numbers


# -- 8. predictions a person can trace ------------------------------------------
def test_predictions_name_rows_classes_and_probabilities(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    run_dir = tmp_path / "run"
    train_in_process(["trainer.max_epochs=2", "logger=none", "callbacks=none"], run_dir)
    saved = pd.read_csv(run_dir / "test_predictions.csv")
    assert list(saved.columns[:5]) == ["row", "y_true", "y_pred", "true_class", "predicted_class"]
    np.testing.assert_array_equal(saved["y_true"], load_digits().target[saved["row"]])
    probabilities = saved[[f"p_{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), saved["y_pred"])


def test_binary_and_classical_predictions_carry_class_names(tmp_path: Path) -> None:
    train_in_process(["data=breast_cancer", "model=knn", "logger=none"], tmp_path / "run")
    saved = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    assert set(saved["true_class"]) == {"malignant", "benign"}
    assert (saved["predicted_class"] == np.where(saved["y_pred"] == 1, "benign", "malignant")).all()
    assert ((saved["p_benign"] > 0.5) == (saved["y_pred"] == 1)).all()


def test_image_folder_predictions_name_the_image_files(tmp_path: Path) -> None:
    from test_images import make_image_folder

    root = make_image_folder(tmp_path / "pets", per_class=8)
    train_in_process(
        [
            "data=image_folder",
            f"data.root={root}",
            "data.image_size=8",
            "model=cnn",
            "trainer.max_epochs=1",
            "logger=none",
            "callbacks=none",
        ],
        tmp_path / "run",
    )
    saved = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    assert len(saved) > 0
    for _, row in saved.iterrows():
        path = Path(row["path"])
        assert path.is_file() and path.relative_to(root).parts[0] == row["true_class"]
    y_true, _ = saved_predictions(tmp_path / "run")
    assert len(y_true) == len(saved)

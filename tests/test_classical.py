"""scikit-learn models beside torch ones: same data, same metric code, same store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, adjusted_rand_score, normalized_mutual_info_score, precision_recall_fscore_support

from sweeplab.config import compose

from conftest import runs_of, saved_predictions, store_overrides, train_in_process

SUPERVISED = [
    ("knn", "digits"),
    ("svm", "breast_cancer"),
    ("decision_tree", "iris"),
    ("random_forest", "wine"),
    ("logistic_regression", "moons"),
    ("linear_regression", "diabetes"),
]


@pytest.mark.parametrize("model,data", SUPERVISED)
def test_estimator_metrics_equal_sklearn_scoring(model: str, data: str, store, tmp_path: Path) -> None:
    overrides = (
        [f"model={model}", f"data={data}", "model.n_estimators=20"] if model == "random_forest" else [f"model={model}", f"data={data}"]
    )
    run_dir = tmp_path / "run"
    metrics = train_in_process([*overrides, *store_overrides(store)], run_dir)
    run = runs_of(store["uri"]).iloc[0]
    assert run.status == "FINISHED"
    assert run["tags.sweeplab.model_kind"] == "classical"
    y_true, y_pred = saved_predictions(run_dir)
    if data == "diabetes":
        assert {"test/mse", "test/mae", "test/r2", "val/r2", "train/r2"} <= set(metrics)
        assert run["metrics.test/mse"] == pytest.approx(np.mean((y_true - y_pred) ** 2), rel=1e-5)
        return
    binary = data in ("breast_cancer", "moons")
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="binary" if binary else "macro", zero_division=0)
    for key, value in {"accuracy": accuracy_score(y_true, y_pred), "precision": p, "recall": r, "f1": f}.items():
        assert run[f"metrics.test/{key}"] == pytest.approx(value, abs=1e-6)
        assert f"metrics.val/{key}" in run.index
    assert f"params.model.{'C' if model in ('svm', 'logistic_regression') else '_target_'}" in run.index


def test_metrics_match_a_direct_sklearn_fit(tmp_path: Path) -> None:
    """Same split, same estimator, fitted by hand: identical test accuracy."""
    import hydra
    from sklearn.neighbors import KNeighborsClassifier

    metrics = train_in_process(["model=knn", "model.n_neighbors=3", "logger=none"], tmp_path / "run")
    dm = hydra.utils.instantiate(compose(["model=knn"]).data)
    x_train, y_train = dm.arrays("train")
    x_test, y_test = dm.arrays("test")
    pred = KNeighborsClassifier(n_neighbors=3).fit(x_train.reshape(len(x_train), -1), y_train).predict(x_test.reshape(len(x_test), -1))
    assert metrics["test/accuracy"] == pytest.approx(accuracy_score(y_test, pred), abs=1e-6)


@pytest.mark.parametrize("model", ["kmeans", "gmm", "dbscan"])
def test_clustering_scores_against_labels(model: str, store, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    option = {"dbscan": "model.eps=1.0", "kmeans": "model.n_clusters=3", "gmm": "model.n_components=3"}[model]
    metrics = train_in_process([f"model={model}", "data=iris", option, *store_overrides(store)], run_dir)
    for key in ("adjusted_rand", "nmi", "silhouette"):
        assert f"test/{key}" in metrics
    assert (run_dir / "clusters.png").stat().st_size > 1000
    if model != "dbscan":
        assert metrics["test/adjusted_rand"] > 0.3  # iris clusters are far from random
        run = runs_of(store["uri"]).iloc[0]
        assert run["tags.sweeplab.task"] == "clustering"


def test_cluster_scores_equal_sklearn() -> None:
    from sweeplab.data.base import Task
    from sweeplab.metrics.scores import score

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    clusters = np.where(rng.random(200) < 0.7, labels, rng.integers(0, 5, 200))
    features = rng.normal(size=(200, 3)) + labels[:, None]
    ours = score(Task.CLUSTERING, labels, clusters, features=features)
    assert ours["adjusted_rand"] == pytest.approx(adjusted_rand_score(labels, clusters), abs=1e-6)
    assert ours["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=1e-6)


def test_pca_logs_reconstruction_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    few = train_in_process(["model=pca", "model.n_components=4", "logger=none"], run_dir)
    many = train_in_process(["model=pca", "model.n_components=32", "logger=none"], tmp_path / "run2")
    assert many["test/mse"] < few["test/mse"]
    assert (run_dir / "reconstructions.png").exists()


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=kmeans", "data=diabetes"], "model=KMeans is a clustering model and needs class labels"),
        (["model=linear_regression", "data=digits"], "is a regression model and needs a numeric target"),
        (["model=logistic_regression", "data=diabetes"], "is a classification model and needs class labels"),
    ],
)
def test_wrong_pairing_is_one_clear_error(overrides: list[str], message: str, store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        train_in_process([*overrides, *store_overrides(store)], tmp_path / "run")
    db = Path(store["outputs"]) / "mlflow.db"
    assert not db.exists() or len(runs_of(store["uri"])) == 0  # refused before a run was created


@pytest.mark.slow
def test_classical_sweep_over_hyperparameters(tmp_path: Path) -> None:
    from conftest import cli

    result = cli(["-m", "model=knn", "model.n_neighbors=1,3,5,9"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert sorted(runs["params.model.n_neighbors"].astype(int)) == [1, 3, 5, 9]
    assert set(runs.status) == {"FINISHED"}


@pytest.mark.slow
def test_a_classical_run_does_not_import_lightning_and_is_recorded_like_a_network(tmp_path: Path) -> None:
    """Its MLflow record is ``tracking.MlflowRun``: the run name, MLflow's source tags, params,
    metrics and model that Lightning's MLFlowLogger gives a network's run, from a process that
    never imports Lightning, torchmetrics or torchvision (torch only where skops, MLflow's safe
    format for the model, loads scikit-learn's array-API shim for it)."""
    from conftest import cli, train_listing_imports

    result, imported = train_listing_imports(["model=knn", "data=iris", "print_config=false"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert imported <= {"torch"}
    network = cli(["data=iris", "trainer.max_epochs=1", "callbacks=none", "print_config=false"], cwd=tmp_path)
    assert network.returncode == 0, network.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").sort_values("start_time")
    knn, net = runs.iloc[0], runs.iloc[1]
    assert list(runs.status) == ["FINISHED", "FINISHED"] and knn["tags.sweeplab.model_kind"] == "classical"
    assert knn["tags.mlflow.runName"] == "model=knn,data=iris"  # print_config changes nothing trained
    for tag in ("mlflow.user", "mlflow.source.name", "mlflow.source.type"):
        assert knn[f"tags.{tag}"] and knn[f"tags.{tag}"] == net[f"tags.{tag}"], tag
    assert knn["tags.sweeplab.model"] == f"runs:/{knn.run_id}/model" and knn["params.data"] == net["params.data"] == "iris"
    y_true, y_pred = saved_predictions(Path(knn["tags.sweeplab.run_dir"]))
    assert knn["metrics.test/accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)

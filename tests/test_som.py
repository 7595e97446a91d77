"""model=som: a self-organising map through the classical path, its scores checked by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from sweeplab.models.som import SelfOrganizingMap

from conftest import runs_of, store_overrides, train_in_process


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=300, centers=4, n_features=5, cluster_std=0.6, random_state=0)


def test_quantization_and_topographic_error_by_hand(blobs) -> None:
    x, _ = blobs
    som = SelfOrganizingMap(grid=[6, 5], num_iteration=2000, random_state=0).fit(x)
    weights = som.weights_.reshape(30, -1)
    distances = np.linalg.norm(x[:, None, :] - weights[None], axis=2)
    order = np.argsort(distances, axis=1)
    assert som.extra_scores(x)["quantization_error"] == pytest.approx(distances.min(axis=1).mean(), rel=1e-9)
    np.testing.assert_array_equal(som.best_units(x), order[:, 0])
    # rectangular map: best and second-best units are neighbours when their grid cells touch (8-neighbourhood)
    first, second = np.divmod(order[:, 0], 5), np.divmod(order[:, 1], 5)
    adjacent = (np.abs(first[0] - second[0]) <= 1) & (np.abs(first[1] - second[1]) <= 1)
    assert som.extra_scores(x)["topographic_error"] == pytest.approx(1 - adjacent.mean(), abs=1e-9)


def test_units_grouped_into_clusters_recover_well_separated_blobs(blobs) -> None:
    x, y = blobs
    som = SelfOrganizingMap(grid=[8, 8], num_iteration=3000, n_clusters=4, random_state=0).fit(x)
    assert set(som.predict(x)) == {0, 1, 2, 3}
    assert adjusted_rand_score(y, som.predict(x)) > 0.95
    again = SelfOrganizingMap(grid=[8, 8], num_iteration=3000, n_clusters=4, random_state=0).fit(x)
    np.testing.assert_array_equal(again.weights_, som.weights_)  # seeded: same map


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_som_on_digits_lands_in_mlflow_with_its_scores_and_maps(topology: str, store, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = train_in_process(["model=som", "model.num_iteration=1000", f"model.topology={topology}", *store_overrides(store)], run_dir)
    run = runs_of(store["uri"]).iloc[0]
    assert run.status == "FINISHED" and run["tags.sweeplab.task"] == "clustering"
    for key in ("adjusted_rand", "nmi", "silhouette", "n_clusters", "quantization_error", "topographic_error"):
        assert run[f"metrics.test/{key}"] == pytest.approx(metrics[f"test/{key}"])
    assert 1 < metrics["test/n_clusters"] <= 100 and metrics["test/nmi"] > 0.5  # digits' classes are far from random on the map
    assert (run_dir / "som_maps.png").stat().st_size > 10_000 and (run_dir / "clusters.png").exists()


def test_som_scores_equal_sklearn_on_the_runs_own_split(tmp_path: Path) -> None:
    import hydra

    from sweeplab.config import compose

    metrics = train_in_process(["model=som", "model.num_iteration=1000", "model.n_clusters=10", "logger=none"], tmp_path / "run")
    cfg = compose(["model=som", "model.num_iteration=1000", "model.n_clusters=10"])
    dm = hydra.utils.instantiate(cfg.data)
    x_train, x_test = (dm.arrays(s)[0].reshape(len(dm.arrays(s)[0]), -1) for s in ("train", "test"))
    y_test = dm.arrays("test")[1]
    som = hydra.utils.instantiate(cfg.model, _convert_="all").fit(x_train)
    clusters = som.predict(x_test)
    assert metrics["test/adjusted_rand"] == pytest.approx(adjusted_rand_score(y_test, clusters), abs=1e-6)
    assert metrics["test/nmi"] == pytest.approx(normalized_mutual_info_score(y_test, clusters), abs=1e-6)
    assert metrics["test/n_clusters"] == len(set(clusters))


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.grid=[10]", r"model.grid=\[10\]: give \[rows, columns\] of positive integers"),
        ("model.topology=torus", r"model.topology='torus': choose one of rectangular, hexagonal"),
        ("model.n_clusters=500", r"model.n_clusters=500: null \(each unit a cluster\) or an integer from 2 to 100"),
        ("model.sigma=0", r"model.sigma=0: must be a number > 0"),
    ],
)
def test_bad_map_settings_are_one_line(override: str, message: str, store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        train_in_process(["model=som", override, *store_overrides(store)], tmp_path / "run")
    db = Path(store["outputs"]) / "mlflow.db"
    assert not db.exists() or runs_of(store["uri"]).empty  # refused before a run exists


@pytest.mark.slow
def test_clustering_preset_puts_the_four_clusterers_in_one_experiment(tmp_path: Path) -> None:
    from conftest import cli

    result = cli(["experiment=clustering_digits", f"paths.outputs={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "4 jobs: 4 trained, 0 skipped, 0 failed" in result.stdout
    runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "clustering_digits")
    assert sorted(runs["params.model"]) == ["dbscan", "gmm", "kmeans", "som"]  # each option by name
    assert (runs["status"] == "FINISHED").all() and (runs["tags.sweeplab.task"] == "clustering").all()
    assert runs["metrics.test/adjusted_rand"].notna().all()
    som = runs[runs["params.model"] == "som"].iloc[0]
    assert som["metrics.test/quantization_error"] > 0 and 0 <= som["metrics.test/topographic_error"] <= 1

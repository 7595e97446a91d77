"""Self-organising map (MiniSom) as a scikit-learn style clusterer.

Each unit of the map is a cluster (a sample belongs to its best-matching
unit), or, with ``n_clusters``, K-means groups the units' weight vectors and
a sample takes its unit's group. Fitted and scored by the classical path
like K-means: same split, ARI / NMI / silhouette against the labels, plus
the map's own quality: quantization error (mean distance of a sample to its
best-matching unit) and topographic error (share of samples whose best and
second-best units are not neighbours), both as MiniSom computes them. Its
pictures: the U-matrix with each test sample's class on its unit, and the
hit map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

NEIGHBORHOODS = ("gaussian", "mexican_hat", "bubble", "triangle")
TOPOLOGIES = ("rectangular", "hexagonal")


class SelfOrganizingMap(ClusterMixin, BaseEstimator):
    def __init__(
        self,
        grid: Sequence[int] = (10, 10),
        sigma: float = 1.0,
        learning_rate: float = 0.5,
        num_iteration: int = 2000,
        neighborhood_function: str = "gaussian",
        topology: str = "rectangular",
        n_clusters: int | None = None,
        random_state: int | None = None,
    ) -> None:
        self.grid = grid
        self.sigma = sigma
        self.learning_rate = learning_rate
        self.num_iteration = num_iteration
        self.neighborhood_function = neighborhood_function
        self.topology = topology
        self.n_clusters = n_clusters
        self.random_state = random_state

    def _check(self) -> tuple[int, int]:
        grid = list(self.grid) if isinstance(self.grid, (list, tuple)) else []
        if len(grid) != 2 or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid) or grid == [1, 1]:
            raise ValueError(f"model.grid={self.grid!r}: give [rows, columns] of positive integers, e.g. [10, 10]")
        for name in ("sigma", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"model.{name}={value!r}: must be a number > 0")
        if isinstance(self.num_iteration, bool) or not isinstance(self.num_iteration, int) or self.num_iteration < 1:
            raise ValueError(f"model.num_iteration={self.num_iteration!r}: must be a positive integer")
        if self.neighborhood_function not in NEIGHBORHOODS:
            raise ValueError(f"model.neighborhood_function={self.neighborhood_function!r}: choose one of {', '.join(NEIGHBORHOODS)}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"model.topology={self.topology!r}: choose one of {', '.join(TOPOLOGIES)}")
        units = grid[0] * grid[1]
        if self.n_clusters is not None and (
            isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, int) or not 2 <= self.n_clusters <= units
        ):
            raise ValueError(f"model.n_clusters={self.n_clusters!r}: null (each unit a cluster) or an integer from 2 to {units}")
        return grid[0], grid[1]

    def _validate_params(self) -> None:  # scikit-learn's hook: sweeplab calls it before a run exists
        self._check()

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> SelfOrganizingMap:
        from minisom import MiniSom

        rows, cols = self._check()
        x = np.asarray(x, dtype=np.float64)
        self.som_ = MiniSom(
            rows,
            cols,
            x.shape[1],
            sigma=self.sigma,
            learning_rate=self.learning_rate,
            neighborhood_function=self.neighborhood_function,
            topology=self.topology,
            random_seed=self.random_state,
        )
        self.som_.pca_weights_init(x)  # deterministic start along the data's main directions
        self.som_.train(x, self.num_iteration, random_order=True)
        self.weights_ = self.som_.get_weights()
        flat = self.weights_.reshape(rows * cols, -1)
        if self.n_clusters is None:
            self.unit_labels_ = np.arange(rows * cols)
        else:
            from sklearn.cluster import KMeans

            self.unit_labels_ = KMeans(self.n_clusters, n_init=10, random_state=self.random_state).fit_predict(flat)
        self.labels_ = self.predict(x)
        return self

    def best_units(self, x: np.ndarray) -> np.ndarray:
        """Index (row * columns + column) of each sample's best-matching unit."""
        flat = self.weights_.reshape(-1, self.weights_.shape[-1])
        x = np.asarray(x, dtype=np.float64)
        # |x - w|^2 = |x|^2 - 2 x.w + |w|^2, without an (n, units, features) array
        distances = (x**2).sum(1)[:, None] - 2 * x @ flat.T + (flat**2).sum(1)[None, :]
        return distances.argmin(axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.unit_labels_[self.best_units(x)]

    # -- the classical path's hooks: scores and pictures of its own ------------
    def extra_scores(self, x: np.ndarray) -> dict[str, float]:
        x = np.asarray(x, dtype=np.float64)
        return {"quantization_error": float(self.som_.quantization_error(x)), "topographic_error": float(self.som_.topographic_error(x))}

    def som_maps(self, x: np.ndarray) -> dict[str, Any]:
        """What the U-matrix picture shows for samples ``x`` (reports.files.write_som_maps draws it)."""
        xx, yy = self.som_.get_euclidean_coordinates()
        best = self.best_units(x)
        hits = np.bincount(best, minlength=xx.size).reshape(xx.shape)
        return {"distance_map": self.som_.distance_map(), "xx": xx, "yy": yy, "best_units": best, "hits": hits, "topology": self.topology}

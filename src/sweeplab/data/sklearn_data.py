"""scikit-learn's bundled data sets (no download) as data modules."""

from __future__ import annotations

import copy
import functools
from typing import Any

import numpy as np

from sweeplab.data.base import ArrayDataModule, Task


@functools.cache
def _read(name: str) -> Any:
    """scikit-learn's ``load_<name>()``, read once a process: a fused group sets up each trial's data from it."""
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")()


def bundled(name: str) -> Any:
    """``load_<name>()``, its arrays this caller's own."""
    return copy.deepcopy(_read(name))


class DigitsDataModule(ArrayDataModule):
    """8x8 grey-level images of handwritten digits, 10 classes."""

    task = Task.MULTICLASS
    sample_shape = (1, 8, 8)
    class_names = [str(i) for i in range(10)]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        digits = bundled("digits")
        return digits.data, digits.target


class IrisDataModule(ArrayDataModule):
    task = Task.MULTICLASS
    class_names = ["setosa", "versicolor", "virginica"]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        bunch = bundled("iris")
        self.feature_names = [str(n) for n in bunch.feature_names]
        return bunch.data, bunch.target


class WineDataModule(ArrayDataModule):
    task = Task.MULTICLASS
    class_names = ["class_0", "class_1", "class_2"]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        bunch = bundled("wine")
        self.feature_names = [str(n) for n in bunch.feature_names]
        return bunch.data, bunch.target


class BreastCancerDataModule(ArrayDataModule):
    """Binary: label 1 (benign) is the positive class precision/recall/F1 report."""

    task = Task.BINARY
    class_names = ["malignant", "benign"]

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        bunch = bundled("breast_cancer")
        self.feature_names = [str(n) for n in bunch.feature_names]
        return bunch.data, bunch.target


class DiabetesDataModule(ArrayDataModule):
    """Regression: disease progression one year after baseline (25-346)."""

    task = Task.REGRESSION

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        bunch = bundled("diabetes")
        self.feature_names = [str(n) for n in bunch.feature_names]
        return bunch.data, bunch.target


class MoonsDataModule(ArrayDataModule):
    """Two interleaving half circles: synthetic binary task."""

    task = Task.BINARY
    class_names = ["moon_0", "moon_1"]

    def __init__(self, n_samples: int = 1000, noise: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_samples < 20:
            raise ValueError(f"data.n_samples={n_samples}: need at least 20 samples to split")
        if noise < 0:
            raise ValueError(f"data.noise={noise}: must be >= 0")
        self.n_samples, self.noise = n_samples, noise

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import make_moons

        self.feature_names = ["x0", "x1"]
        return make_moons(n_samples=self.n_samples, noise=self.noise, random_state=self.seed)

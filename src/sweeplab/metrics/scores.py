"""The one place metrics are defined, for Lightning runs and scikit-learn models alike.

Classification: accuracy is (TP+TN)/all (torchmetrics ``average="micro"``,
equal to scikit-learn's ``accuracy_score``); precision, recall and F1 are
macro averages for multi-class and the positive class (label 1) for binary.
Regression: mse, mae, r2. Metrics always receive hard predictions (class
ids, or values for regression), never logits, so no threshold guessing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sweeplab.data.base import Task

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1")
REGRESSION_METRICS = ("mse", "mae", "r2")
LOWER_IS_BETTER = ("loss", "mse", "mae", "error")  # words in a metric's name that mean it is minimised


def lower_is_better(metric: str) -> bool:
    """Whether ``metric`` (``val/loss``, ``test/f1``) is minimised, by its name."""
    return any(word in metric.rsplit("/", 1)[-1] for word in LOWER_IS_BETTER)


def build_metrics(task: Task, num_classes: int | None = None) -> MetricCollection:
    """Metric collection for ``task``, without prefix; clone it per stage."""
    from torchmetrics import MetricCollection  # with Lightning's imports: only once a run computes metrics

    if task is Task.MULTICLASS and (not num_classes or num_classes < 2):
        raise ValueError(f"multiclass metrics need num_classes >= 2, got {num_classes}")
    if task.is_classification:
        # One confusion-matrix state a stage, from which the four scores are derived.
        from sweeplab.metrics.confusion import BinaryScores, MulticlassScores

        return MetricCollection({"scores": BinaryScores() if task is Task.BINARY else MulticlassScores(num_classes)})
    if task in (Task.REGRESSION, Task.RECONSTRUCTION):
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

        metrics = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}
        if task is Task.REGRESSION:
            metrics["r2"] = R2Score()
        return MetricCollection(metrics)
    if task is Task.EMBEDDING:  # scored on word benchmarks after training (sweeplab.text.intrinsic); the loss is logged
        return MetricCollection({})
    raise ValueError(f"no supervised metrics for task {task.value!r}")


def score(
    task: Task,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    num_classes: int | None = None,
    prefix: str = "",
    features: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of whole-split predictions (numpy), for models fitted outside
    Lightning (scikit-learn estimators): scikit-learn's own functions with the
    definitions ``build_metrics`` uses (tests/test_metrics.py holds the two
    equal), so such a run needs neither torch nor torchmetrics. Clustering:
    ``y_pred`` are cluster ids, scored against the labels (ARI, NMI) and by
    ``features`` (silhouette)."""
    from sklearn import metrics as sk

    if task is Task.CLUSTERING:
        return {f"{prefix}{k}": v for k, v in cluster_scores(y_true, y_pred, features).items()}
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if task.is_classification:
        if task is Task.MULTICLASS and (not num_classes or num_classes < 2):
            raise ValueError(f"multiclass metrics need num_classes >= 2, got {num_classes}")
        # Macro over the classes present in either array, as torchmetrics averages; binary: the positive class 1.
        average = "binary" if task is Task.BINARY else "macro"
        precision, recall, f1, _ = sk.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        values = {"accuracy": sk.accuracy_score(y_true, y_pred), "precision": precision, "recall": recall, "f1": f1}
    elif task in (Task.REGRESSION, Task.RECONSTRUCTION):
        y_true, y_pred = y_true.reshape(-1).astype(np.float64), y_pred.reshape(-1).astype(np.float64)
        values = {"mse": sk.mean_squared_error(y_true, y_pred), "mae": sk.mean_absolute_error(y_true, y_pred)}
        if task is Task.REGRESSION:
            values["r2"] = sk.r2_score(y_true, y_pred)
    elif task is Task.EMBEDDING:
        values = {}
    else:
        raise ValueError(f"no supervised metrics for task {task.value!r}")
    return {f"{prefix}{k}": float(v) for k, v in values.items()}


def cluster_scores(labels: np.ndarray, clusters: np.ndarray, features: np.ndarray | None) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information against the labels,
    silhouette on the features (undefined, so NaN, with fewer than 2 clusters)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    ari = float(adjusted_rand_score(np.asarray(labels), np.asarray(clusters)))
    nmi = float(normalized_mutual_info_score(np.asarray(labels), np.asarray(clusters)))
    out = {
        "adjusted_rand": ari,
        "nmi": nmi,
        "n_clusters": float(len(set(np.asarray(clusters).tolist()) - {-1})),
    }
    n_found = len(set(np.asarray(clusters).tolist()))
    out["silhouette"] = (
        float(silhouette_score(features, clusters)) if features is not None and 1 < n_found < len(clusters) else float("nan")
    )
    return out

"""scikit-learn estimators on sweeplab's data modules, split and metrics.

A ``conf/model`` entry whose ``_target_`` is an estimator class (anything
with ``fit`` that is not a torch module) is fitted here instead of by
Lightning: same data module and split, same metric code
(:func:`sweeplab.metrics.score`), same MLflow run layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from sweeplab.data.base import Task
from sweeplab.metrics import score

SPLITS = ("train", "val", "test")


def is_estimator_config(model_cfg: DictConfig) -> bool:
    """True when conf/model names a scikit-learn style estimator class."""
    import hydra
    import torch

    target = hydra.utils.get_object(model_cfg._target_)
    return isinstance(target, type) and hasattr(target, "fit") and not issubclass(target, torch.nn.Module)


def estimator_task(estimator: Any) -> Task:
    from sklearn.base import ClusterMixin, is_classifier, is_regressor

    if is_classifier(estimator):
        return Task.MULTICLASS  # binary or multiclass: the data decides
    if is_regressor(estimator):
        return Task.REGRESSION
    if isinstance(estimator, ClusterMixin) or hasattr(estimator, "n_components") and hasattr(estimator, "predict"):
        return Task.CLUSTERING  # KMeans, DBSCAN, GaussianMixture
    if hasattr(estimator, "inverse_transform"):
        return Task.RECONSTRUCTION  # PCA
    raise ValueError(f"model={type(estimator).__name__}: not a classifier, regressor, clusterer or invertible transform")


def run_task(estimator: Any, data_task: Task) -> Task:
    """What a run with this estimator computes: the data's task for supervised models."""
    kind = estimator_task(estimator)
    return data_task if kind in (Task.MULTICLASS, Task.REGRESSION) else kind


def check_pairing(name: str, kind: Task, data_task: Task) -> None:
    """Refuse an estimator whose kind does not fit the data's task."""
    ok = {
        Task.MULTICLASS: data_task.is_classification,
        Task.REGRESSION: data_task is Task.REGRESSION,
        Task.CLUSTERING: data_task.is_classification,
        Task.RECONSTRUCTION: True,
    }[kind]
    if not ok:
        needs = {
            Task.MULTICLASS: "class labels (a binary or multiclass data set such as data=digits)",
            Task.REGRESSION: "a numeric target (a regression data set such as data=diabetes)",
            Task.CLUSTERING: "class labels to score clusters against (data=digits, iris, wine, breast_cancer or moons)",
        }[kind]
        what = "classification" if kind is Task.MULTICLASS else kind.value
        raise ValueError(f"model={name} is a {what} model and needs {needs}; the data's task is {data_task.value}")


def fit_and_score(estimator: Any, datamodule: Any, out_dir: Path) -> tuple[dict[str, float], list[Path]]:
    """Fit on train, score every split, write the test report; return metrics and files."""
    from sweeplab.reports import write_cluster_plot, write_reconstruction_report, write_test_report

    name = type(estimator).__name__
    kind = estimator_task(estimator)
    data_task = datamodule.task
    check_pairing(name, kind, data_task)
    x = {s: datamodule.arrays(s)[0].reshape(len(datamodule.arrays(s)[0]), -1) for s in SPLITS}
    y = {s: datamodule.arrays(s)[1] for s in SPLITS}
    metrics: dict[str, float] = {}

    if kind is Task.RECONSTRUCTION:
        estimator.fit(x["train"])
        recon = {s: estimator.inverse_transform(estimator.transform(x[s])) for s in SPLITS}
        for s in SPLITS:
            metrics.update(score(Task.RECONSTRUCTION, x[s], recon[s], prefix=f"{s}/"))
        return metrics, write_reconstruction_report(
            x["test"], recon["test"], datamodule.input_shape, out_dir, datamodule.unstandardize
        )

    if kind is Task.CLUSTERING:
        estimator.fit(x["train"])
        # DBSCAN has no predict: it clusters each split on its own.
        labels = {s: estimator.predict(x[s]) if hasattr(estimator, "predict") else estimator.fit_predict(x[s]) for s in SPLITS}
        for s in SPLITS:
            metrics.update(score(Task.CLUSTERING, y[s], labels[s], prefix=f"{s}/", features=x[s]))
        return metrics, [write_cluster_plot(x["test"], labels["test"], y["test"], out_dir)]

    estimator.fit(x["train"], y["train"])
    predictions = {s: estimator.predict(x[s]) for s in SPLITS}
    for s in SPLITS:
        metrics.update(score(data_task, y[s], predictions[s], num_classes=datamodule.num_classes, prefix=f"{s}/"))
    return metrics, write_test_report(
        data_task, y["test"], predictions["test"], out_dir, datamodule.class_names, datamodule.time_ordered
    )

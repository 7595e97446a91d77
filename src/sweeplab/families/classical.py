"""scikit-learn estimators on sweeplab's data modules, split and metrics.

A ``conf/model`` entry whose ``_target_`` is an estimator class (anything
with ``fit`` that is not a torch module) is fitted here instead of by
Lightning: same data module and split, same metric code
(:func:`sweeplab.metrics.scores.score`), same MLflow run layout.

``model=knn|svm|decision_tree|random_forest`` name scikit-learn's classifier;
on a regression data set the same option builds the regressor of that family
(``REGRESSOR_OF``), so one sweep over models works on any task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeplab.data.base import Task
from sweeplab.metrics.scores import score

SPLITS = ("train", "val", "test")

# The regressor of each classifier family, used when the data's task is regression.
REGRESSOR_OF = {
    "sklearn.neighbors.KNeighborsClassifier": "sklearn.neighbors.KNeighborsRegressor",
    "sklearn.svm.SVC": "sklearn.svm.SVR",
    "sklearn.tree.DecisionTreeClassifier": "sklearn.tree.DecisionTreeRegressor",
    "sklearn.ensemble.RandomForestClassifier": "sklearn.ensemble.RandomForestRegressor",
}
# Parameters that only seed randomness: dropped without a word when the regressor has none (SVR).
SEED_PARAMS = ("random_state",)


def is_estimator_config(model_cfg: DictConfig) -> bool:
    """True when conf/model names a scikit-learn style estimator class."""
    import sys

    import hydra

    target = hydra.utils.get_object(model_cfg._target_)
    torch = sys.modules.get("torch")  # a torch module's class was defined by importing torch
    return isinstance(target, type) and hasattr(target, "fit") and not (torch is not None and issubclass(target, torch.nn.Module))


def for_task(model_cfg: DictConfig, data_task: Task, name: str) -> DictConfig:
    """The model config to instantiate for the data's task: the classifier's
    config as it is, or, on regression data, its family's regressor with the
    same parameters. A parameter the regressor lacks must still have the
    classifier's default (else one line naming it); one whose default is a
    classification-only value (``criterion: gini``) takes the regressor's."""
    import hydra
    from omegaconf import OmegaConf

    target = str(model_cfg._target_)
    if data_task is not Task.REGRESSION or target not in REGRESSOR_OF:
        return model_cfg
    classifier, regressor = hydra.utils.get_object(target), hydra.utils.get_object(REGRESSOR_OF[target])
    given = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k != "_target_"}
    classifier_defaults, regressor_defaults = classifier().get_params(), regressor().get_params()
    params: dict[str, Any] = {}
    for key, value in given.items():
        if key not in regressor_defaults:
            if key not in SEED_PARAMS and value != classifier_defaults.get(key):
                raise ValueError(
                    f"model={name} on regression data is {regressor.__name__}, which has no {key}; "
                    f"drop model.{key}={value!r} (its parameters: {', '.join(sorted(regressor_defaults))})"
                )
            continue
        keep_default = value == classifier_defaults.get(key) and value != regressor_defaults[key]
        params[key] = regressor_defaults[key] if keep_default else value
    return OmegaConf.create({"_target_": REGRESSOR_OF[target], **params})


def estimator_task(estimator: Any) -> Task:
    from sklearn.base import ClusterMixin, is_classifier, is_regressor

    if getattr(estimator, "task", None) is Task.EMBEDDING:
        return Task.EMBEDDING  # word vectors (Word2Vec): fitted on a corpus
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
        Task.EMBEDDING: data_task is Task.EMBEDDING,
    }[kind]
    if not ok:
        needs = {
            Task.MULTICLASS: "class labels (a binary or multiclass data set such as data=digits); "
            "for regression use model=linear_regression, knn, svm, decision_tree or random_forest",
            Task.REGRESSION: "a numeric target (a regression data set such as data=diabetes); "
            "for classification use model=logistic_regression, knn, svm, decision_tree or random_forest",
            Task.CLUSTERING: "class labels to score clusters against (data=digits, iris, wine, breast_cancer or moons)",
        }[kind]
        what = "classification" if kind is Task.MULTICLASS else kind.value
        raise ValueError(f"model={name} is a {what} model and needs {needs}; the data's task is {data_task.value}")


def check_params(estimator: Any, name: str) -> None:
    """Refuse bad hyper-parameters before a run exists: scikit-learn's own
    parameter validation (names the parameter, the value and what it takes)."""
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return
    try:
        validate()
    except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is both
        raise ValueError(f"model={name}: {exc}") from None


def fit_and_score(estimator: Any, datamodule: Any, out_dir: Path) -> tuple[dict[str, float], list[Path]]:
    """Fit on train, score every split, write the test report; return metrics and files.

    An estimator may add scores and pictures of its own (a self-organising
    map's quantization error and U-matrix): ``extra_scores(x) -> {name: value}``
    is logged per split; ``som_maps(x) -> {...}`` is drawn for the test split.
    """
    from sweeplab.reports.files import write_cluster_plot, write_reconstruction_report, write_som_maps, write_test_report

    name = type(estimator).__name__
    kind = estimator_task(estimator)
    data_task = datamodule.task
    check_pairing(name, kind, data_task)
    if kind is Task.EMBEDDING:  # word vectors from the corpus, scored on the word benchmarks
        return estimator.fit(datamodule.sentences, datamodule.vocabulary).evaluate(out_dir)
    x = {s: datamodule.arrays(s)[0].reshape(len(datamodule.arrays(s)[0]), -1) for s in SPLITS}
    y = {s: datamodule.arrays(s)[1] for s in SPLITS}
    metrics: dict[str, float] = {}

    if kind is Task.RECONSTRUCTION:
        estimator.fit(x["train"])
        recon = {s: estimator.inverse_transform(estimator.transform(x[s])) for s in SPLITS}
        for s in SPLITS:
            metrics.update(score(Task.RECONSTRUCTION, x[s], recon[s], prefix=f"{s}/"))
        reports = write_reconstruction_report(x["test"], recon["test"], datamodule.input_shape, out_dir, datamodule.unstandardize)
    elif kind is Task.CLUSTERING:
        estimator.fit(x["train"])
        # DBSCAN has no predict: it clusters each split on its own.
        labels = {s: estimator.predict(x[s]) if hasattr(estimator, "predict") else estimator.fit_predict(x[s]) for s in SPLITS}
        for s in SPLITS:
            metrics.update(score(Task.CLUSTERING, y[s], labels[s], prefix=f"{s}/", features=x[s]))
        reports = [write_cluster_plot(x["test"], labels["test"], y["test"], out_dir)]
    else:
        estimator.fit(x["train"], y["train"])
        predictions = {s: estimator.predict(x[s]) for s in SPLITS}
        if data_task is Task.REGRESSION:  # fitted on the standardised target, reported in its own units
            y = {s: datamodule.targets(s) for s in SPLITS}
            predictions = {s: datamodule.unscale_target(predictions[s]) for s in SPLITS}
        for s in SPLITS:
            metrics.update(score(data_task, y[s], predictions[s], num_classes=datamodule.num_classes, prefix=f"{s}/"))
        # SVC has predict_proba only with probability=True: hasattr says which.
        probabilities = estimator.predict_proba(x["test"]) if data_task.is_classification and hasattr(estimator, "predict_proba") else None
        reports = write_test_report(data_task, y["test"], predictions["test"], out_dir, datamodule, probabilities)

    if hasattr(estimator, "extra_scores"):
        for s in SPLITS:
            metrics.update({f"{s}/{k}": v for k, v in estimator.extra_scores(x[s]).items()})
    if hasattr(estimator, "som_maps"):
        maps = estimator.som_maps(x["test"])
        reports = [*reports, write_som_maps(**maps, labels=y["test"], class_names=datamodule.class_names, out_dir=out_dir)]
    return metrics, reports


class ClassicalFamily:
    """A scikit-learn estimator on a data module: fitted once, scored on every split."""

    kind = "classical"
    resumable = False  # fitting is one call: there is nothing to continue
    lightning = False  # its MLflow record is tracking.MlflowRun: the run imports neither Lightning nor torch

    def __init__(self, cfg: DictConfig, name: str) -> None:
        self.cfg, self.name = cfg, name

    def prepare(self) -> None:
        import hydra
        from omegaconf import open_dict

        from sweeplab.data.text import check_text_pairing
        from sweeplab.families.base import quiet_libraries, seed_everything

        cfg = self.cfg
        quiet_libraries()
        seed_everything(cfg.seed, torch=False)  # estimators without a random_state draw from numpy's generator
        self.datamodule = hydra.utils.instantiate(cfg.data)
        check_text_pairing(self.datamodule, cfg.model, self.name)
        if self.datamodule.task is not Task.EMBEDDING:  # a corpus is read as sentences; its cells are GloVe's
            self.datamodule.setup()
        with open_dict(cfg):  # a classifier family on regression data becomes its regressor
            cfg.model = for_task(cfg.model, self.datamodule.task, self.name)
        self.estimator = hydra.utils.instantiate(cfg.model, _convert_="all")
        check_params(self.estimator, self.name)
        check_pairing(self.name, estimator_task(self.estimator), self.datamodule.task)
        self.task = run_task(self.estimator, self.datamodule.task)

    def attach(self, loggers: list[Any], run_dir: Path) -> None:
        self.loggers, self.run_dir = loggers, run_dir

    def served_model(self) -> tuple[Any, str]:
        return self.estimator, "sklearn"

    def fit(self, start_from: Path | None = None) -> tuple[dict[str, float], list[Path]]:
        metrics, reports = fit_and_score(self.estimator, self.datamodule, self.run_dir)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=0)
        return metrics, reports

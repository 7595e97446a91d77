"""Metrics must equal scikit-learn's on the same predictions: both the torchmetrics
collections the Lightning module logs and ``score``, which a scikit-learn model's run uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, precision_recall_fscore_support, r2_score

from sweeplab.data.base import Task
from sweeplab.metrics.scores import build_metrics, score
from sweeplab.models.outputs import predictions


def collection_scores(task: Task, y_true, y_pred, num_classes: int | None = None) -> dict[str, float]:
    """What the Lightning module logs for a split: its torchmetrics collection, updated with every prediction."""
    metrics = build_metrics(task, num_classes)
    dtype = torch.float32 if task is Task.REGRESSION else torch.long
    metrics.update(torch.as_tensor(np.asarray(y_pred), dtype=dtype), torch.as_tensor(np.asarray(y_true), dtype=dtype))
    return {k: float(v) for k, v in metrics.compute().items()}


BOTH = pytest.mark.parametrize("scores", [score, collection_scores], ids=["score", "collection"])


def sklearn_classification(y_true, y_pred, binary: bool) -> dict[str, float]:
    avg = "binary" if binary else "macro"
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=avg, zero_division=0)
    return {"accuracy": accuracy_score(y_true, y_pred), "precision": p, "recall": r, "f1": f}


@BOTH
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_equals_sklearn(seed: int, scores) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))
    ours = scores(Task.MULTICLASS, y_true, y_pred, num_classes=5)
    for key, value in sklearn_classification(y_true, y_pred, binary=False).items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


@BOTH
def test_macro_averages_over_the_classes_either_side_has(scores) -> None:
    """Class 4 never occurs, class 3 is only predicted, class 2 never predicted: both
    implementations average over classes 0-3, with 0 for an undefined precision or recall."""
    y_true = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    y_pred = np.array([0, 1, 1, 1, 0, 3, 0, 3])
    ours = scores(Task.MULTICLASS, y_true, y_pred, num_classes=5)
    for key, value in sklearn_classification(y_true, y_pred, binary=False).items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


@BOTH
def test_accuracy_is_micro_not_balanced(scores) -> None:
    # Imbalanced: balanced accuracy (torchmetrics' macro default) would be 0.5.
    y_true = np.array([0] * 90 + [1] * 10)
    y_pred = np.zeros(100, dtype=int)
    assert scores(Task.MULTICLASS, y_true, y_pred, num_classes=2)["accuracy"] == pytest.approx(0.9)


@BOTH
@pytest.mark.parametrize("seed", [0, 1])
def test_binary_equals_sklearn_positive_class(seed: int, scores) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, 1 - y_true)
    ours = scores(Task.BINARY, y_true, y_pred)
    for key, value in sklearn_classification(y_true, y_pred, binary=True).items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key


@BOTH
def test_regression_equals_sklearn(scores) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=100)
    y_pred = y_true + rng.normal(scale=0.5, size=100)
    ours = scores(Task.REGRESSION, y_true, y_pred)
    assert ours["mse"] == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-5)
    assert ours["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred), rel=1e-5)
    assert ours["r2"] == pytest.approx(r2_score(y_true, y_pred), rel=1e-5)


def test_binary_predictions_threshold_logits_not_probabilities() -> None:
    # Logits inside [0, 1] would fool a metric that guesses probabilities.
    logits = torch.tensor([[0.2], [0.9], [-0.1], [-3.0]])
    assert predictions(Task.BINARY, logits).tolist() == [1, 1, 0, 0]


def test_stage_clones_are_independent() -> None:
    base = build_metrics(Task.MULTICLASS, 3)
    train, val = base.clone(prefix="train/"), base.clone(prefix="val/")
    train.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    val.update(torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1]))
    assert train.compute()["train/accuracy"] == 1.0
    assert val.compute()["val/accuracy"] == 0.0


@pytest.mark.parametrize("task", [Task.MULTICLASS, Task.BINARY])
def test_the_collection_accumulates_batches_like_one_split(task: Task) -> None:
    """Epoch values come from many step updates: uneven batches give scikit-learn's scores on the whole split."""
    rng = np.random.default_rng(3)
    classes = 2 if task is Task.BINARY else 6
    y_true = rng.integers(0, classes, 517)
    y_pred = np.where(rng.random(517) < 0.5, y_true, rng.integers(0, classes, 517))
    metrics = build_metrics(task, None if task is Task.BINARY else classes).clone(prefix="val/")
    for chunk in np.array_split(np.arange(517), [64, 128, 130, 300, 301, 480]):
        metrics.update(torch.as_tensor(y_pred[chunk]), torch.as_tensor(y_true[chunk]))
    ours = {k: float(v) for k, v in metrics.compute().items()}
    expected = sklearn_classification(y_true, y_pred, binary=task is Task.BINARY)
    assert set(ours) == {f"val/{k}" for k in expected}
    for key, value in expected.items():
        assert ours[f"val/{key}"] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("deterministic", [False, True], ids=["default", "deterministic"])
def test_a_label_outside_the_classes_is_named(deterministic: bool) -> None:
    """Refused, never silently left out of the scores: torchmetrics' deterministic count skips such a label."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        metrics = build_metrics(Task.MULTICLASS, 5)
        with pytest.raises(ValueError, match=r"(target label 5 is|1 target labels are) outside the 5 classes 0\.\.4"):
            metrics.update(torch.tensor([0, 1, 2]), torch.tensor([0, 5, 2]))
            metrics.compute()
    finally:
        torch.use_deterministic_algorithms(was)


def test_the_test_report_writes_the_confusion_matrix_scikit_learn_counts(tmp_path, monkeypatch) -> None:
    """confusion_matrix.png: a cell a (true, predicted) pair, its count written where it is not 0;
    classification_report.txt is scikit-learn's."""
    from types import SimpleNamespace

    from sklearn.metrics import classification_report, confusion_matrix

    from sweeplab.reports import files

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.8, y_true, rng.integers(0, 4, 200))
    names = ["cat", "dog", "a much longer class name", "bird"]
    drawn = []
    plot = files.ConfusionPlot.draw
    monkeypatch.setattr(files.ConfusionPlot, "draw", lambda self, matrix: drawn.append(plot(self, matrix)) or drawn[-1])
    data = SimpleNamespace(class_names=names, ids={}, id_name="row", time_ordered=False)
    written = files.write_test_report(Task.MULTICLASS, y_true, y_pred, tmp_path, data)
    assert {p.name for p in written} == {"test_predictions.csv", "classification_report.txt", "confusion_matrix.png"}
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 5000
    expected = confusion_matrix(y_true, y_pred)
    ax = drawn[0].ax
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts if t.get_visible()}
    assert cells == {(i, j): int(expected[i, j]) for i, j in zip(*np.nonzero(expected))}
    assert np.array_equal(ax.images[0].get_array(), expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert (tmp_path / "classification_report.txt").read_text() == classification_report(
        y_true, y_pred, labels=[0, 1, 2, 3], target_names=names, digits=4, zero_division=0
    )


def test_later_confusion_reports_draw_on_the_kept_plot_and_equal_a_fresh_tight_figure(tmp_path, monkeypatch) -> None:
    """The confusion plot of some class names is laid out, cropped and drawn once a process: a later
    report with other counts, drawn on its kept background, is pixel for pixel what a fresh figure
    saved with savefig(bbox_inches="tight") gives, with none of the earlier counts."""
    from PIL import Image

    from sweeplab.reports import files

    monkeypatch.setattr(files.ConfusionPlot, "_kept", {})
    names = ["cat", "dog", "a much longer class name", "bird"]
    rng = np.random.default_rng(1)
    first, later = rng.integers(0, 40, (4, 4)), rng.integers(0, 400, (4, 4))
    first[0, 1], later[0, 1] = 7, 0  # a count the later report must not show
    kept = files.ConfusionPlot.of(names, first)
    kept.draw(first).save(tmp_path / "first.png")
    monkeypatch.setattr(kept.fig.canvas, "draw", lambda: pytest.fail("the whole figure was drawn again"))
    assert files.ConfusionPlot.of(names, later) is kept
    kept.draw(later).save(tmp_path / "reused.png")
    assert sum(t.get_visible() for t in kept.ax.texts) == np.count_nonzero(later)
    for name, matrix in (("first", first), ("reused", later)):
        fresh = files.confusion_figure(matrix, names)
        fresh.savefig(tmp_path / f"{name}-tight.png", dpi=files.DPI, bbox_inches="tight", pad_inches=files.PAD_INCHES)
        drawn, tight = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in (name, f"{name}-tight"))
        assert drawn.shape == tight.shape and np.array_equal(drawn, tight), name
    assert Image.open(tmp_path / "reused.png").info == Image.open(tmp_path / "reused-tight.png").info  # savefig's metadata, dpi

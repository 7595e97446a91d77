"""Accuracy, precision, recall and F1 of a split from one confusion matrix.

Four torchmetrics classes share their state through a ``MetricCollection``
compute group, but each step still pays the collection's bookkeeping for two
groups (micro accuracy, macro others): 150-200 us an update against 40-70 us
for one confusion-matrix metric (with its input checks and, for multi-class,
the sample count below). These are that metric, its ``compute`` deriving the
four scores with the definitions of ``sweeplab.metrics.scores``; under DDP the matrix
is summed over processes like any torchmetrics state. ``tests/test_metrics.py`` holds them equal to
scikit-learn's.
"""

from __future__ import annotations

import torch
from torchmetrics.classification import BinaryConfusionMatrix, MulticlassConfusionMatrix


def scores_from_confusion(confusion: torch.Tensor, binary: bool) -> dict[str, torch.Tensor]:
    """Rows are targets, columns predictions. Binary: the positive class 1; multi-class:
    macro over the classes present in targets or predictions, 0 where a ratio is undefined."""
    counts = confusion.to(torch.float64)
    tp = counts.diagonal()
    predicted, actual = counts.sum(0), counts.sum(1)
    fp, fn = predicted - tp, actual - tp

    def ratio(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        return torch.where(bottom > 0, top / bottom.clamp(min=1), torch.zeros_like(top))

    precision, recall, f1 = ratio(tp, tp + fp), ratio(tp, tp + fn), ratio(2 * tp, 2 * tp + fp + fn)
    if binary:
        precision, recall, f1 = precision[1], recall[1], f1[1]
    else:
        present = (actual + predicted) > 0
        precision, recall, f1 = (v[present].mean() if present.any() else v.sum() * 0 for v in (precision, recall, f1))
    accuracy = ratio(tp.sum(), counts.sum())
    dtype = torch.get_default_dtype()
    return {"accuracy": accuracy.to(dtype), "precision": precision.to(dtype), "recall": recall.to(dtype), "f1": f1.to(dtype)}


class MulticlassScores(MulticlassConfusionMatrix):
    """Accuracy (micro), macro precision, recall and F1, from one confusion matrix."""

    def __init__(self, num_classes: int, **kwargs: object) -> None:
        super().__init__(num_classes, **kwargs)
        # Under torch.use_deterministic_algorithms (trainer.deterministic, the default) torchmetrics
        # counts with a comparison that skips a label out of range instead of failing: counting the
        # samples as well shows it at compute, once an epoch, without waiting on the device each step.
        self.add_state("samples", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        try:
            super().update(preds, target)
        except RuntimeError:  # the matrix no longer fits torchmetrics' counts: a label out of range
            outside = target[(target < 0) | (target >= self.num_classes)]
            if outside.numel():
                raise ValueError(
                    f"target label {int(outside[0])} is outside the {self.num_classes} classes 0..{self.num_classes - 1}"
                ) from None
            raise
        self.samples += target.numel()

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        missing = int(self.samples) - int(self.confmat.sum())
        if missing:
            raise ValueError(f"{missing} target labels are outside the {self.num_classes} classes 0..{self.num_classes - 1}")
        return scores_from_confusion(self.confmat, binary=False)


class BinaryScores(BinaryConfusionMatrix):
    """Accuracy, and precision, recall and F1 of class 1, from one 2x2 confusion matrix."""

    def compute(self) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return scores_from_confusion(self.confmat, binary=True)

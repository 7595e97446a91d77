"""A network's raw output turned into predictions and class probabilities.

Torch only (no Lightning, no torchmetrics): the training module, the test
report and a served model (``sweeplab.record.model``) all read outputs here, so a
served model's probabilities are the test report's. ``task`` is a
``sweeplab.data.base.Task`` or its value (``"binary"``).
"""

from __future__ import annotations

from typing import Any

import torch


def predictions(task: Any, output: torch.Tensor) -> torch.Tensor:
    """Turn a network's raw output into what the metrics compare with targets."""
    if task == "binary":
        return (output.reshape(-1) > 0).long()  # logit > 0  <=>  probability > 0.5
    if task == "multiclass":
        return output.argmax(dim=-1)
    if task == "regression":
        return output.reshape(-1)
    return output


def probabilities(task: Any, output: torch.Tensor) -> torch.Tensor:
    """Class probabilities from a classifier's raw output, one column per class."""
    if task == "binary":
        positive = torch.sigmoid(output.float().reshape(-1))
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(output.float(), dim=-1)

"""Seed style 1: a single layer."""

from __future__ import annotations

from torch import nn

from sweeplab.models.layers import flat_size


def build_linear(input_shape: tuple[int, ...], num_outputs: int, bias: bool = True) -> nn.Module:
    """One ``nn.Linear``: logistic regression (classification) or linear regression.

    ``nn.Flatten`` only reshapes image-shaped samples; the Linear is the only layer with weights.
    """
    return nn.Sequential(nn.Flatten(), nn.Linear(flat_size(input_shape), num_outputs, bias=bias))

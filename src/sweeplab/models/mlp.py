"""Seed style 3: nn.Sequential."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sweeplab.models import layers


def build_mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    hidden_sizes: Sequence[int] = (128, 64),
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """Multi-layer perceptron: Flatten, then (Linear, activation, Dropout) per hidden size."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout={dropout}: must be in [0, 1)")
    modules: list[nn.Module] = [nn.Flatten()]
    width = layers.flat_size(input_shape)
    for size in hidden_sizes:
        if int(size) < 1:
            raise ValueError(f"model.hidden_sizes={list(hidden_sizes)}: sizes must be positive")
        modules += [nn.Linear(width, int(size)), layers.activation(activation)]
        if dropout > 0:
            modules.append(nn.Dropout(dropout))
        width = int(size)
    modules.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*modules)

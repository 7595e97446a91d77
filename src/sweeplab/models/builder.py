"""Seed style 4: a plain function that builds and returns the network."""

from __future__ import annotations

from torch import nn

from sweeplab.models import layers


def build_deep_mlp(
    input_shape: tuple[int, ...],
    num_outputs: int,
    width: int = 64,
    depth: int = 3,
    activation: str = "gelu",
    batch_norm: bool = True,
) -> nn.Sequential:
    """``depth`` identical hidden blocks made by one reusable inner function."""
    if depth < 1 or width < 1:
        raise ValueError(f"model.depth={depth}, model.width={width}: both must be >= 1")

    def block(n_in: int) -> list[nn.Module]:
        # Defined once, reused for every hidden layer: the point of this style.
        return [nn.Linear(n_in, width), *([nn.BatchNorm1d(width)] if batch_norm else []), layers.activation(activation)]

    modules: list[nn.Module] = [nn.Flatten(), *block(layers.flat_size(input_shape))]
    for _ in range(depth - 1):
        modules += block(width)
    modules.append(nn.Linear(width, num_outputs))
    return nn.Sequential(*modules)

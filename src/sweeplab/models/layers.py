"""Small pieces the model builders share."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"model.activation={name!r}: choose one of {', '.join(ACTIVATIONS)}") from None


def flat_size(input_shape: tuple[int, ...]) -> int:
    size = 1
    for d in input_shape:
        size *= int(d)
    return size

"""AutoEncoder (seed: unsupervised, dimensionality reduction)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweeplab.data.base import Task
from sweeplab.models import layers


class AutoEncoder(nn.Module):
    """Encoder (MLP) down to ``latent_size``, mirrored decoder back to the input.

    It trains on the inputs alone: ``task`` tells the training module to use
    each sample as its own target (reconstruction, MSE), whatever labels the
    data has. ``latent_size`` plays the role of PCA's ``n_components``.
    """

    task = Task.RECONSTRUCTION

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int | None = None,
        latent_size: int = 16,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if isinstance(latent_size, bool) or not isinstance(latent_size, int) or latent_size < 1:
            raise ValueError(f"model.latent_size={latent_size!r}: must be a positive integer")
        self.input_shape = tuple(int(d) for d in input_shape)
        size = layers.flat_size(self.input_shape)
        widths = [size, *(int(h) for h in hidden_sizes)]

        def stack(sizes: list[int], final: int) -> list[nn.Module]:
            modules: list[nn.Module] = []
            for n_in, n_out in zip(sizes, sizes[1:]):
                modules += [nn.Linear(n_in, n_out), layers.activation(activation)]
            return modules + [nn.Linear(sizes[-1], final)]

        self.encoder = nn.Sequential(nn.Flatten(), *stack(widths, latent_size))
        self.decoder = nn.Sequential(*stack([latent_size, *reversed(widths[1:])], size))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)).reshape(x.shape)

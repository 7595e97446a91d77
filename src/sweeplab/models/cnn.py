"""Seed style 2: a class inheriting nn.Module with __init__ and forward."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv blocks (conv, BN, ReLU, 2x2 max-pool) then a two-layer head.

    Pooling stops before the feature map would fall below 2x2, so the same
    config works for 8x8 digits and 28x28 or 32x32 images. ``batch_norm=False``
    (``+model.batch_norm=false``) leaves BatchNorm out: the fused launcher cannot
    vectorise its running statistics, so only such CNNs train as one group.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden_size: int = 64,
        dropout: float = 0.1,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"model=cnn needs image-shaped samples (channels, height, width); "
                f"the data gives {tuple(input_shape)}. Use an image data set such as data=digits"
            )
        in_ch, h, w = (int(d) for d in input_shape)
        blocks: list[nn.Module] = []
        for out_ch in channels:
            blocks.append(nn.Conv2d(in_ch, int(out_ch), kernel_size, padding=kernel_size // 2))
            if batch_norm:
                blocks.append(nn.BatchNorm2d(int(out_ch)))
            blocks.append(nn.ReLU())
            if min(h, w) >= 4:
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = int(out_ch)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * h * w, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

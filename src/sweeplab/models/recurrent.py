"""Recurrent networks (seed: RNN, LSTM with its forget/input/output gates, GRU)
for forecasting and sequence classification."""

from __future__ import annotations

import torch
from torch import nn

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """``cell`` layers read the sequence step by step; the last layer's final
    hidden state (both directions' when bidirectional) feeds a Linear head.

    Sample shapes: ``(steps, features)`` as series data gives; ``(steps,)``
    (one feature); images ``(channels, height, width)`` are read row by row,
    ``height`` steps of ``channels * width`` features (digits: 8 steps of 8).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"model.cell={cell!r}: choose one of {', '.join(CELLS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout}: must be in [0, 1)")
        for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name}={value!r}: must be a positive integer")
        shape = tuple(int(d) for d in input_shape)
        if len(shape) not in (1, 2, 3):
            raise ValueError(f"model={cell} reads sequences (steps, features); the data gives samples of shape {shape}")
        features = 1 if len(shape) == 1 else shape[-1] * (shape[0] if len(shape) == 3 else 1)
        self.input_rank = len(shape)
        # nn.RNN's own dropout acts between stacked layers only; the head gets it too.
        self.rnn = CELLS[cell](
            features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * self.directions, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_rank == 1:
            x = x.unsqueeze(-1)
        elif self.input_rank == 3:  # (B, C, H, W) -> H steps of C*W features
            x = x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)
        _, hidden = self.rnn(x)
        if isinstance(hidden, tuple):  # LSTM: (h_n, c_n)
            hidden = hidden[0]
        last = hidden[-self.directions :]  # the top layer, each direction
        return self.head(self.dropout(torch.cat(list(last), dim=-1)))

"""A tabular agent's greedy policy as a torch module, so it is logged and served
as an MLflow Model like a DQN's Q-network (sweeplab.record.model)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class PolicyTable(nn.Module):
    """State index -> that state's row of action values (a Q-table, or one-hot chosen actions)."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.as_tensor(np.asarray(table), dtype=torch.float32))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.table[states.reshape(-1).long()]

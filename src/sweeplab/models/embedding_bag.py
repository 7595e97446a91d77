"""A model whose embedding weights get sparse gradients (for SparseAdam)."""
from __future__ import annotations

import torch
from torch import nn

from sweeplab.models.layers import flat_size


class BinnedEmbeddingBag(nn.Module):
    """Bucket each (standardised) feature into ``n_bins``, embed (feature, bin)
    tokens with ``nn.EmbeddingBag(sparse=True)``, sum them, then a dense head.

    Only the rows of the tokens present in a batch get gradient, so the
    embedding's gradient is a sparse tensor.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        n_bins: int = 16,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        value_range: float = 3.0,
    ) -> None:
        super().__init__()
        if n_bins < 2:
            raise ValueError(f"model.n_bins={n_bins}: must be >= 2")
        self.n_features = flat_size(input_shape)
        self.n_bins = n_bins
        self.register_buffer("edges", torch.linspace(-value_range, value_range, n_bins - 1))
        self.register_buffer("offsets", torch.arange(self.n_features) * n_bins)
        self.embedding = nn.EmbeddingBag(self.n_features * n_bins, embedding_dim, mode="sum", sparse=True)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(embedding_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        tokens = torch.bucketize(x.contiguous(), self.edges) + self.offsets
        return self.head(self.embedding(tokens))

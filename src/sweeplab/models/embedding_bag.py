"""Bags of embedded tokens: words of a text, or (feature, bin) pairs of a table.

``model=embedding_bag`` builds the one that fits the data: on text, each
row of token ids is a bag of words (the fastText-style classifier; vectors
may be pre-trained); on numbers, each feature value is bucketed and its
(feature, bin) token embedded, the model ``optimizer=sparse_adam`` exists for.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sweeplab.models.layers import flat_size


def build_embedding_bag(
    input_shape: tuple[int, ...],
    num_outputs: int,
    text: Any = None,
    embedding_dim: int = 32,
    hidden_size: int = 64,
    n_bins: int = 16,
    sparse: bool | None = None,
    vectors: str | None = None,
    freeze_embeddings: bool = False,
) -> nn.Module:
    """A text bag of words when the data is text (``text`` given), else binned features.

    ``sparse=null``: sparse gradients for binned features (for SparseAdam),
    dense for text (any optimizer).
    """
    if text is None:
        if vectors is not None:
            raise ValueError(f"model.vectors={vectors}: word vectors need text data (data=sentiment, text_csv or text_folder)")
        return BinnedEmbeddingBag(input_shape, num_outputs, n_bins, embedding_dim, hidden_size, sparse=True if sparse is None else sparse)
    return TextEmbeddingBag(
        text, num_outputs, embedding_dim, hidden_size, sparse=bool(sparse), vectors=vectors, freeze_embeddings=freeze_embeddings
    )


class TextEmbeddingBag(nn.Module):
    """Mean of the word vectors of a text (padding left out), then a small MLP head."""

    def __init__(
        self,
        text: Any,
        num_outputs: int,
        embedding_dim: int = 32,
        hidden_size: int = 64,
        sparse: bool = False,
        vectors: str | None = None,
        freeze_embeddings: bool = False,
    ) -> None:
        super().__init__()
        vocab_size = len(text.vocabulary)
        self.facts: dict[str, float] = {}  # logged with the run (the vectors' coverage)
        self.embedding = nn.EmbeddingBag(vocab_size, embedding_dim, mode="mean", sparse=sparse, padding_idx=text.pad_id)
        if vectors is not None:
            from sweeplab.text.vectors import TRAINED_HERE, pretrained_embedding

            # The run's seed (seed_everything ran before the model is built) seeds the pre-training too.
            trained_here = str(vectors) in TRAINED_HERE
            weights, coverage = pretrained_embedding(
                str(vectors), text, embedding_dim if trained_here else None, torch.initial_seed() % 2**31
            )
            self.embedding = nn.EmbeddingBag.from_pretrained(
                weights, freeze=freeze_embeddings, mode="mean", sparse=sparse, padding_idx=text.pad_id
            )
            self.facts["vectors_coverage"] = coverage
        elif freeze_embeddings:
            raise ValueError("model.freeze_embeddings=true without model.vectors would freeze random vectors; give model.vectors")
        width = self.embedding.embedding_dim
        self.head = nn.Sequential(nn.Linear(width, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_outputs))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids))


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
        sparse: bool = True,
    ) -> None:
        super().__init__()
        if n_bins < 2:
            raise ValueError(f"model.n_bins={n_bins}: must be >= 2")
        self.n_features = flat_size(input_shape)
        self.n_bins = n_bins
        self.register_buffer("edges", torch.linspace(-value_range, value_range, n_bins - 1))
        self.register_buffer("offsets", torch.arange(self.n_features) * n_bins)
        self.embedding = nn.EmbeddingBag(self.n_features * n_bins, embedding_dim, mode="sum", sparse=sparse)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(embedding_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        tokens = torch.bucketize(x.contiguous(), self.edges) + self.offsets
        return self.head(self.embedding(tokens))

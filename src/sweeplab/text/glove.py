"""GloVe (Pennington, Socher and Manning, 2014) as a torch module.

No maintained GloVe trainer is on the package registries, so the objective is
written here: for every non-zero co-occurrence count X_ij,
``f(X_ij) * (w_i . w~_j + b_i + b~_j - log X_ij)^2`` with
``f(x) = min(1, (x / x_max) ** alpha)``, trained by the same Lightning module
as every network (``optimizer=adagrad``, as the paper). The word vectors are
``w + w~``, as the paper reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sweeplab.data.base import Task


def cooccurrence(sentences: Sequence[Sequence[str]], vocabulary: Sequence[str], window: int = 5) -> Any:
    """Symmetric word-word counts within ``window`` words, each pair weighted
    1/distance; words outside ``vocabulary`` are skipped (but still count for distance)."""
    from scipy.sparse import coo_matrix

    index = {w: i for i, w in enumerate(vocabulary)}
    rows, cols, weights = [], [], []
    for sentence in sentences:
        ids = np.asarray([index.get(w, -1) for w in sentence], dtype=np.int64)
        for distance in range(1, min(window, len(ids) - 1) + 1):
            left, right = ids[:-distance], ids[distance:]
            keep = (left >= 0) & (right >= 0)
            rows += [left[keep], right[keep]]
            cols += [right[keep], left[keep]]
            weights += [np.full(2 * int(keep.sum()), 1.0 / distance)]
    n = len(vocabulary)
    if not rows:
        return coo_matrix((n, n)).tocsr()
    data = np.concatenate(weights)
    return coo_matrix((data, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()  # sums repeats


class GloVe(nn.Module):
    """Word and context vectors and biases; input rows are ``(i, j, X_ij)``."""

    task = Task.EMBEDDING

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        text: Any,
        vector_size: int = 100,
        x_max: float = 100.0,
        alpha: float = 0.75,
    ) -> None:
        super().__init__()
        if vector_size < 1 or x_max <= 0 or not 0 < alpha <= 1:
            raise ValueError(
                f"model.vector_size={vector_size}, model.x_max={x_max}, model.alpha={alpha}: need vector_size >= 1, x_max > 0, 0 < alpha <= 1"
            )
        self.vocabulary = list(text.vocabulary)
        n = len(self.vocabulary)
        self.x_max, self.alpha = float(x_max), float(alpha)
        self.words, self.contexts = nn.Embedding(n, vector_size), nn.Embedding(n, vector_size)
        self.word_bias, self.context_bias = nn.Embedding(n, 1), nn.Embedding(n, 1)
        for table in (self.words, self.contexts):  # the reference implementation's initialisation
            nn.init.uniform_(table.weight, -0.5 / vector_size, 0.5 / vector_size)
        for bias in (self.word_bias, self.context_bias):
            nn.init.zeros_(bias.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, j = x[:, 0].long(), x[:, 1].long()
        dot = (self.words(i) * self.contexts(j)).sum(-1)
        return dot + self.word_bias(i).squeeze(-1) + self.context_bias(j).squeeze(-1)

    def objective(self, output: torch.Tensor, x: torch.Tensor, log_count: torch.Tensor) -> torch.Tensor:
        """The weighted least squares GloVe minimises (mean over the batch's cells)."""
        weight = torch.clamp(x[:, 2] / self.x_max, max=1.0) ** self.alpha
        return (weight * (output - log_count) ** 2).mean()

    def vectors(self) -> np.ndarray:
        return (self.words.weight + self.contexts.weight).detach().float().cpu().numpy()

    def evaluate(self, out_dir: Path) -> tuple[dict[str, float], list[Path]]:
        from sweeplab.text.intrinsic import evaluate_vectors

        return evaluate_vectors(self.vocabulary, self.vectors(), out_dir)


def train_glove(
    sentences: Sequence[Sequence[str]],
    vocabulary: Sequence[str],
    vector_size: int,
    seed: int,
    window: int = 5,
    epochs: int = 25,
    lr: float = 0.05,
    batch_size: int = 512,
) -> np.ndarray:
    """GloVe vectors for ``vocabulary`` from a small corpus, in a plain loop
    (pre-training inside a classifier's set-up, not a tracked run)."""
    from types import SimpleNamespace

    matrix = cooccurrence(sentences, vocabulary, window).tocoo()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = GloVe((3,), 1, SimpleNamespace(vocabulary=list(vocabulary)), vector_size)
    if matrix.nnz == 0:
        return model.vectors()
    x = torch.as_tensor(np.stack([matrix.row, matrix.col, matrix.data], axis=1), dtype=torch.float32)
    y = torch.log(x[:, 2])
    optimizer = torch.optim.Adagrad(model.parameters(), lr=lr)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = model.objective(model(x[batch]), x[batch], y[batch])
            loss.backward()
            optimizer.step()
    return model.vectors()

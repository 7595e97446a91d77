"""Word2Vec (Mikolov et al., 2013), trained by gensim: a fit-once model like a
scikit-learn estimator, so it runs in the classical family on ``data=corpus``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sweeplab.data.base import Task

ARCHITECTURES = {1: "skip-gram", 0: "CBOW"}


class Word2Vec:
    """``sg=1`` skip-gram (predict the context from a word; better on small
    corpora), ``sg=0`` CBOW; negative sampling with ``negative`` noise words."""

    task = Task.EMBEDDING

    def __init__(
        self,
        sg: int = 1,
        vector_size: int = 100,
        window: int = 5,
        negative: int = 5,
        epochs: int = 20,
        alpha: float = 0.025,
        random_state: int = 42,
        workers: int = 1,
    ) -> None:
        if sg not in ARCHITECTURES:
            raise ValueError(f"model.sg={sg!r}: 1 (skip-gram) or 0 (CBOW)")
        for name, value in (("vector_size", vector_size), ("window", window), ("epochs", epochs), ("workers", workers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name}={value!r}: must be a positive integer")
        if negative < 0:
            raise ValueError(f"model.negative={negative}: must be >= 0 (0: no negative sampling)")
        self.sg, self.vector_size, self.window, self.negative, self.epochs = sg, vector_size, window, negative, epochs
        self.alpha, self.random_state, self.workers = alpha, random_state, workers

    def fit(self, sentences: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> Word2Vec:
        """Learn vectors for exactly ``vocabulary`` (the data module's, shared with GloVe)."""
        from gensim.models import Word2Vec as GensimWord2Vec

        keep = set(vocabulary)
        # workers=1 and a fixed seed: the same run gives the same vectors.
        model = GensimWord2Vec(
            sentences=[[w for w in s if w in keep] for s in sentences],
            vector_size=self.vector_size,
            window=self.window,
            sg=self.sg,
            negative=self.negative,
            hs=0 if self.negative else 1,
            epochs=self.epochs,
            alpha=self.alpha,
            min_count=1,
            seed=self.random_state,
            workers=self.workers,
        )
        self.vocabulary_ = [w for w in vocabulary if w in model.wv.key_to_index]
        self.vectors_ = np.asarray(model.wv[self.vocabulary_], dtype=np.float32)
        return self

    def evaluate(self, out_dir: Path) -> tuple[dict[str, float], list[Path]]:
        from sweeplab.text.intrinsic import evaluate_vectors

        return evaluate_vectors(self.vocabulary_, self.vectors_, out_dir)

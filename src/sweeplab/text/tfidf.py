"""TF-IDF + logistic regression on a text data module's token ids: the
classical baseline a text classifier has to beat (scikit-learn, fitted once)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class TfidfLogisticRegression(ClassifierMixin, BaseEstimator):
    """Token counts per text (padding id 0 left out) -> TF-IDF -> logistic regression."""

    reads_token_ids = True  # rows of token ids from a text data module, not numeric features

    def __init__(self, C: float = 1.0, sublinear_tf: bool = True, max_iter: int = 1000, random_state: int | None = None) -> None:
        self.C, self.sublinear_tf, self.max_iter, self.random_state = C, sublinear_tf, max_iter, random_state

    def _validate_params(self) -> None:  # what sweeplab's check_params calls before a run exists
        if not self.C > 0 or self.max_iter < 1:
            raise ValueError(f"C={self.C}, max_iter={self.max_iter}: C must be > 0 and max_iter >= 1")

    def _counts(self, ids: np.ndarray) -> Any:
        from scipy.sparse import csr_matrix

        ids = np.asarray(ids, dtype=np.int64)
        rows = np.repeat(np.arange(len(ids)), ids.shape[1])
        cols = ids.reshape(-1)
        keep = (cols > 0) & (cols < self.n_features_)  # padding (id 0) out
        keep[keep] = self.seen_[cols[keep]]  # as scikit-learn's vectorizers: a token unseen in training is ignored
        return csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(len(ids), self.n_features_))

    def fit(self, ids: np.ndarray, y: np.ndarray) -> TfidfLogisticRegression:
        from sklearn.feature_extraction.text import TfidfTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.n_features_ = int(np.max(ids)) + 1
        self.seen_ = np.zeros(self.n_features_, dtype=bool)
        self.seen_[np.unique(ids)] = True
        self.pipeline_ = make_pipeline(
            TfidfTransformer(sublinear_tf=self.sublinear_tf),
            LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.random_state),
        )
        self.pipeline_.fit(self._counts(ids), y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict(self, ids: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict(self._counts(ids))

    def predict_proba(self, ids: np.ndarray) -> np.ndarray:
        return self.pipeline_.predict_proba(self._counts(ids))

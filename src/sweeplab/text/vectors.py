"""Pre-trained word vectors for a classifier's embedding table.

``model.vectors`` is a text file in word2vec format (a first line
``count dim``) or GloVe format (no header): one word and its numbers per
line, as gensim's ``KeyedVectors.load_word2vec_format`` reads them; or
``word2vec`` / ``glove`` to pre-train on the training texts first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

TRAINED_HERE = ("word2vec", "glove")


def read_vectors(path: Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int, str]:
    """The vectors of the ``wanted`` words (matched exactly, else lower-cased),
    the file's dimension and its format; every line is checked."""
    if not path.is_file():
        raise FileNotFoundError(
            f"model.vectors={path}: no such file (a word2vec or GloVe text file, or word2vec / glove to train them here)"
        )
    found: dict[str, np.ndarray] = {}
    dim, fmt = None, "glove"
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip("\n").rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    dim, fmt = int(parts[1]), "word2vec"
                    continue
                if not parts or parts == [""]:
                    continue
                word, numbers = parts[0], parts[1:]
                if dim is None:
                    dim = len(numbers)
                    if dim == 0:
                        raise ValueError(
                            f"model.vectors={path}: line {number} has a word and no numbers; expected word2vec or GloVe text format (word v1 v2 ...)"
                        )
                if len(numbers) != dim:
                    raise ValueError(
                        f"model.vectors={path}: line {number} has {len(numbers)} numbers where the file's vectors have {dim}; "
                        "every vector must have the same dimension"
                    )
                key = word if word in wanted else word.lower()
                if key in wanted and (key == word or key not in found):
                    try:
                        found[key] = np.asarray(numbers, dtype=np.float32)
                    except ValueError:
                        raise ValueError(f"model.vectors={path}: line {number} is not a word followed by numbers") from None
    except UnicodeDecodeError:
        raise ValueError(
            f"model.vectors={path}: not a text file; expected word2vec or GloVe text format "
            "(binary word2vec .bin files: convert with gensim's KeyedVectors.save_word2vec_format(binary=False))"
        ) from None
    if dim is None:
        raise ValueError(f"model.vectors={path}: the file holds no vectors")
    return found, dim, fmt


def embedding_matrix(
    source: str,
    text: Any,
    dim: int | None,
    seed: int = 0,
) -> tuple[np.ndarray, float, str]:
    """(vocabulary x dim matrix, coverage, description). Words the vectors lack
    get small random rows; the padding row is zero. Coverage is the share of
    the vocabulary (special tokens left out) that has a vector."""
    vocabulary = list(text.vocabulary)
    words = vocabulary_words(vocabulary)
    if source in TRAINED_HERE:
        dim = dim or 100
        if source == "word2vec":
            from sweeplab.text.word2vec import Word2Vec

            model = Word2Vec(vector_size=dim, random_state=seed).fit(text.train_tokens, words)
            found = dict(zip(model.vocabulary_, model.vectors_))
        else:
            from sweeplab.text.glove import train_glove

            found = dict(zip(words, train_glove(text.train_tokens, words, dim, seed)))
        what = f"{source} trained on the training texts"
    else:
        found, dim, fmt = read_vectors(Path(source).expanduser(), set(words))
        what = f"{source} ({fmt} format)"
    rng = np.random.default_rng(seed)
    scale = float(np.std(np.stack(list(found.values())))) if found else 0.1
    matrix = rng.normal(0.0, scale or 0.1, size=(len(vocabulary), dim)).astype(np.float32)
    for i, word in enumerate(vocabulary):
        if word in found:
            matrix[i] = found[word]
    if 0 <= text.pad_id < len(vocabulary):
        matrix[text.pad_id] = 0.0
    coverage = sum(w in found for w in words) / max(1, len(words))
    return matrix, coverage, what


def pretrained_embedding(source: str, text: Any, dim: int | None, seed: int) -> tuple[Any, float]:
    """The embedding weights as a tensor, printing the coverage."""
    import torch

    matrix, coverage, what = embedding_matrix(source, text, dim, seed)
    print(
        f"sweeplab-train: model.vectors={what}: {coverage:.1%} of the {len(vocabulary_words(text.vocabulary)):,}-word "
        f"vocabulary found (dim {matrix.shape[1]}); the rest start random",
        flush=True,
    )
    return torch.from_numpy(matrix), coverage


def vocabulary_words(vocabulary: Sequence[str]) -> list[str]:
    """The vocabulary without its special tokens ([PAD], [UNK], [CLS], ...)."""
    return [w for w in vocabulary if not (w.startswith("[") and w.endswith("]"))]

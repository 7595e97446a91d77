"""Labelled text for classifiers, and a corpus for word vectors.

Texts are split like every data set (seeded, stratified), then tokenised by
``data.tokenizer`` fitted on the training split only (see
``sweeplab.text.tokenizers``), truncated to ``max_length`` tokens and padded
to the longest text: samples are rows of token ids, padding id 0 for our
tokenizers. Models read the vocabulary through ``model_inputs()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sweeplab.data.base import ArrayDataModule, Task
from sweeplab.text.corpora import gensim_data


@dataclass
class TextInputs:
    """What a text model is built from, beside the input shape and outputs."""

    vocabulary: list[str]
    pad_id: int
    cls_id: int | None  # prepended by a model that pools on it; None: the tokenizer adds its own
    tokenizer: str
    train_tokens: list[list[str]] = field(repr=False, default_factory=list)  # for pre-training vectors on the training texts


def check_texts(texts: list[Any], where: str, ids: list[Any] | None = None) -> list[str]:
    """Every sample is a non-empty string; one line naming the first bad ones otherwise."""
    if not texts:
        raise ValueError(f"{where}: no texts found")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) and t is not None]  # None: an empty cell
    if bad:
        kinds = sorted({type(texts[i]).__name__ for i in bad})
        raise ValueError(f"{where} holds {', '.join(kinds)} values, not text ({_name(bad, ids)}); point it at a text column")
    empty = [i for i, t in enumerate(texts) if t is None or not t.strip()]
    if empty:
        raise ValueError(f"{where}: {len(empty)} empty text(s) ({_name(empty, ids)}); drop or fill them")
    return texts


def _name(positions: list[int], ids: list[Any] | None) -> str:
    shown = [str(ids[i]) if ids is not None else f"row {i}" for i in positions[:3]]
    return ", ".join(shown) + (", ..." if len(positions) > 3 else "")


class TextDataModule(ArrayDataModule):
    """Texts and class labels: split, tokenised on the training split, padded ids.

    Subclasses implement ``load_texts() -> (texts, labels as class names)``.
    """

    def __init__(
        self,
        tokenizer: str = "auto",
        max_length: int = 128,
        min_freq: int = 1,
        vocab_size: int = 8000,
        pretrained: str | None = None,
        download: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs["standardize"] = False  # token ids are not scaled
        super().__init__(**kwargs)
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"data.max_length={max_length!r}: must be a positive integer")
        self.tokenizer_name, self.max_length, self.min_freq, self.vocab_size = tokenizer, max_length, min_freq, vocab_size
        self.pretrained, self.download = pretrained, download
        texts, labels = self.load_texts()
        names = sorted({str(label) for label in labels})
        if len(names) < 2:
            raise ValueError(f"{self.describe()}: every label is {names[0]!r}; a classifier needs at least 2 classes")
        self.class_names = names
        lookup = {n: i for i, n in enumerate(names)}
        self._texts = np.asarray(texts, dtype=object)
        self._labels = np.asarray([lookup[str(label)] for label in labels], dtype=np.int64)
        self.task = Task.BINARY if len(names) == 2 else Task.MULTICLASS
        self.tokenizer: Any = None

    def describe(self) -> str:
        return type(self).__name__

    def load_texts(self) -> tuple[list[str], list[Any]]:
        raise NotImplementedError

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self._texts, self._labels

    def setup(self, stage: str | None = None) -> None:
        from sweeplab.text.tokenizers import build_tokenizer, pad_ids

        if self._prepared:
            return
        loaded = self.load_splits()
        self.ids = {k: np.asarray(v[2]) for k, v in loaded.items()}
        self.texts = {k: [str(t) for t in v[0]] for k, v in loaded.items()}
        self.tokenizer = build_tokenizer(
            self.tokenizer_name, self.texts["train"], self.min_freq, self.vocab_size, self.pretrained, self.download
        )
        encoded = {k: self.tokenizer.encode(t, self.max_length) for k, t in self.texts.items()}
        length = max(1, max(len(row) for rows in encoded.values() for row in rows))
        self.splits = {k: (pad_ids(rows, length, self.tokenizer.pad_id), np.asarray(loaded[k][1])) for k, rows in encoded.items()}
        self._prepared = True

    def model_inputs(self) -> dict[str, Any]:
        """Extra arguments a model's builder may take (``text``): the vocabulary and ids."""
        self.setup()
        tok = self.tokenizer
        return {"text": TextInputs(tok.vocabulary, tok.pad_id, tok.cls_id, tok.name, tok.tokenize(self.texts["train"]))}


class SentimentDataModule(TextDataModule):
    """Pang & Lee's movie-review polarity sentences as gensim ships them: 200 sentences, pos/neg."""

    id_name = "line"

    def describe(self) -> str:
        return "data=sentiment"

    def load_texts(self) -> tuple[list[str], list[str]]:
        texts, labels = [], []
        for line in gensim_data("pang_lee_polarity.cor").read_text(encoding="cp1252", errors="replace").splitlines():
            label, _, text = line.partition(" ")
            labels.append(label.removeprefix("__label__"))
            texts.append(text.strip())
        return texts, labels

    def load_ids(self, n: int) -> np.ndarray:
        return np.arange(1, n + 1)  # line numbers in the file


class TextCsvDataModule(TextDataModule):
    """A user's table with a text column and a label column (CSV/TSV, JSON, JSONL, Parquet)."""

    def __init__(self, path: str, text: str, target: str, sep: str | None = None, **kwargs: Any) -> None:
        if not path:
            raise ValueError("data.path is not set: give the table, e.g. data.path=reviews.csv")
        self.path, self.text_column, self.target, self.sep = Path(path).expanduser(), text, target, sep
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"data.path={self.path}"

    def load_texts(self) -> tuple[list[str], list[Any]]:
        from sweeplab.data.csv_data import read_table

        frame = read_table(self.path, self.sep)
        for key, column in (("text", self.text_column), ("target", self.target)):
            if column not in frame.columns:
                raise ValueError(f"data.{key}={column!r}: no such column in {self.path}; columns: {', '.join(map(str, frame.columns))}")
        rows = [str(i) for i in range(len(frame))]
        labels = frame[self.target]
        if labels.isna().any():
            missing = [rows[i] for i in np.flatnonzero(labels.isna().to_numpy())[:3]]
            raise ValueError(f"data.target={self.target!r}: {int(labels.isna().sum())} missing label(s), first at row {', '.join(missing)}")
        values = [None if isinstance(v, float) and np.isnan(v) else v for v in frame[self.text_column].tolist()]
        texts = check_texts(values, f"data.text={self.text_column!r}", [f"row {r}" for r in rows])
        return texts, labels.tolist()


class TextFolderDataModule(TextDataModule):
    """One sub-folder of text files per class under ``root`` (scikit-learn's ``load_files`` layout)."""

    id_name = "file"

    def __init__(self, root: str, encoding: str = "utf-8", **kwargs: Any) -> None:
        if not root:
            raise ValueError("data.root is not set: give a folder with one sub-folder of .txt files per class")
        self.root, self.encoding = Path(root).expanduser(), encoding
        super().__init__(**kwargs)

    def describe(self) -> str:
        return f"data.root={self.root}"

    def load_texts(self) -> tuple[list[str], list[str]]:
        from sklearn.datasets import load_files

        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={self.root}: no such folder")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(classes) < 2:
            raise ValueError(
                f"data.root={self.root}: found {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); needs one sub-folder per class, at least 2"
            )
        bunch = load_files(str(self.root), encoding=self.encoding, decode_error="replace", shuffle=False)
        self._files = [str(Path(f).relative_to(self.root)) for f in bunch.filenames]
        texts = check_texts(list(bunch.data), f"data.root={self.root}", self._files)
        return texts, [bunch.target_names[i] for i in bunch.target]

    def load_ids(self, n: int) -> np.ndarray:
        return np.asarray(self._files, dtype=object)


class CorpusDataModule(ArrayDataModule):
    """Unlabelled text for word vectors: one document per line (default: gensim's
    ``lee_background.cor``, 300 Lee news articles, ~60k words).

    Word2Vec reads ``sentences``; GloVe trains on the word-word co-occurrence
    matrix of the same vocabulary (words seen at least ``min_freq`` times;
    counts within ``window`` words, each weighted 1/distance as in the GloVe
    paper). Its non-zero cells ``(i, j, X_ij)`` are the samples, split
    train/val/test like any data set; the target is ``log X_ij``.
    """

    task = Task.EMBEDDING
    id_name = "cell"

    def __init__(self, path: str | None = None, min_freq: int = 2, window: int = 5, **kwargs: Any) -> None:
        kwargs["standardize"] = False
        kwargs["scale_target"] = False
        super().__init__(**kwargs)
        if min_freq < 1 or window < 1:
            raise ValueError(f"data.min_freq={min_freq}, data.window={window}: both must be >= 1")
        self.path = Path(path).expanduser() if path else gensim_data("lee_background.cor")
        if not self.path.is_file():
            raise FileNotFoundError(f"data.path={self.path}: no such file (a text file, one document per line)")
        from sweeplab.text.tokenizers import words

        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        self.sentences = [words(line) for line in lines if line.strip()]
        if not self.sentences:
            raise ValueError(f"data.path={self.path}: no text in the file")
        from collections import Counter

        counts = Counter(w for s in self.sentences for w in s)
        self.vocabulary = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if len(self.vocabulary) < 10:
            raise ValueError(
                f"data.path={self.path}: only {len(self.vocabulary)} words occur >= data.min_freq={min_freq} times; too little text for word vectors"
            )
        self.counts = np.asarray([counts[w] for w in self.vocabulary], dtype=np.int64)
        self.min_freq, self.window = min_freq, window

    @property
    def num_outputs(self) -> int:
        return 1

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from sweeplab.text.glove import cooccurrence

        matrix = cooccurrence(self.sentences, self.vocabulary, self.window).tocoo()
        x = np.stack([matrix.row, matrix.col, matrix.data], axis=1).astype(np.float32)
        return x, np.log(matrix.data).astype(np.float32)

    def model_inputs(self) -> dict[str, Any]:
        return {"text": TextInputs(list(self.vocabulary), -1, None, "word", self.sentences)}


def check_text_pairing(datamodule: Any, model_cfg: Any, name: str) -> None:
    """Refuse, in one line, a model that cannot read this data: word vectors
    need a corpus, a corpus trains only word vectors, and token ids are not
    numbers for an MLP or a nearest-neighbour search."""
    import inspect

    import hydra

    target = hydra.utils.get_object(str(model_cfg._target_))
    net_task = getattr(target, "task", None)
    if datamodule.task is Task.EMBEDDING and net_task is not Task.EMBEDDING:
        raise ValueError(f"data=corpus is unlabelled text for word vectors: use model=word2vec or model=glove (not model={name})")
    if net_task is Task.EMBEDDING and datamodule.task is not Task.EMBEDDING:
        raise ValueError(f"model={name} learns word vectors from unlabelled text: use data=corpus (data.path=<a text file> for your own)")
    is_text = isinstance(datamodule, TextDataModule)
    reads_text = getattr(target, "reads_token_ids", False) or "text" in inspect.signature(target).parameters
    if is_text and not reads_text:
        raise ValueError(
            f"model={name} does not read text; on {datamodule.describe()} use model=embedding_bag, bert or tfidf_logistic_regression"
        )

"""Tokenizers a text data module can use, all fitted on the training split only.

``word``: lower-case words and punctuation, a vocabulary of the words seen at
least ``min_freq`` times. ``wordpiece`` / ``bpe``: sub-word vocabularies of
``vocab_size`` learned with Hugging Face ``tokenizers``. ``pretrained``: the
tokenizer saved beside a pre-trained model (``save_pretrained``), ids as that
model expects them. Ours reserve [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOKENIZERS = ("auto", "word", "wordpiece", "bpe", "pretrained")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD_ID, UNK_ID, CLS_ID = 0, 1, 2
_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def pad_ids(rows: list[list[int]], length: int, pad_id: int) -> Any:
    """Token id rows as one int64 array of ``length`` columns: padded with ``pad_id``, or cut."""
    import numpy as np

    out = np.full((len(rows), length), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : min(len(row), length)] = row[:length]
    return out


def words(text: str) -> list[str]:
    """The ``word`` tokenizer's split: lower-case words (with an apostrophe part) and punctuation marks."""
    return _WORD.findall(text.lower())


class TextTokenizer:
    """Text -> token ids. ``vocabulary[i]`` is token i's text; ``cls_id`` is
    None when the tokenizer adds its own special tokens (pre-trained ones)."""

    name: str
    vocabulary: list[str]
    pad_id: int = PAD_ID
    cls_id: int | None = CLS_ID

    def tokens(self, text: str) -> list[str]:
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.tokens(t) for t in texts]

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        raise NotImplementedError


class WordTokenizer(TextTokenizer):
    name = "word"

    def __init__(self, train_texts: Sequence[str], min_freq: int = 1, max_vocab: int | None = None) -> None:
        # The training texts are split once: for the vocabulary, their ids and pre-training vectors.
        self._fitted = (train_texts, [words(text) for text in train_texts])
        counts = Counter(t for tokens in self._fitted[1] for t in tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_vocab:
            kept = kept[: max(0, max_vocab - len(SPECIALS))]
        self.vocabulary = [*SPECIALS, *kept]
        self.index = {w: i for i, w in enumerate(self.vocabulary)}

    def tokens(self, text: str) -> list[str]:
        return words(text)

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        return self._fitted[1] if texts is self._fitted[0] else [words(t) for t in texts]

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        get = self.index.get
        return [[get(t, UNK_ID) for t in tokens[:max_length]] for tokens in self.tokenize(texts)]


class SubwordTokenizer(TextTokenizer):
    """WordPiece or BPE, learned from the training texts by Hugging Face ``tokenizers``."""

    def __init__(self, kind: str, train_texts: Sequence[str], vocab_size: int, min_freq: int = 1) -> None:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        self.name = kind
        if kind == "wordpiece":
            tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size, min_frequency=min_freq, special_tokens=list(SPECIALS), show_progress=False
            )
        else:
            tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, special_tokens=list(SPECIALS), show_progress=False)
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.train_from_iterator(list(train_texts), trainer=trainer)
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.vocabulary = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.encode(text).tokens

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return [e.ids[:max_length] for e in self.tokenizer.encode_batch(list(texts))]


class PretrainedTokenizer(TextTokenizer):
    """The tokenizer of a pre-trained model: a local folder, or a hub name when downloading is allowed."""

    name = "pretrained"
    cls_id = None  # it adds [CLS] ... [SEP] itself

    def __init__(self, source: str, download: bool = False) -> None:
        from transformers import AutoTokenizer

        local = Path(source).expanduser()
        if local.is_dir():
            found = [
                p.name
                for p in local.iterdir()
                if p.name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")
            ]
            if not found:
                raise ValueError(
                    f"model.weights={source}: the folder has no tokenizer (tokenizer.json, vocab.txt or tokenizer_config.json); "
                    "save it beside the model with tokenizer.save_pretrained(folder)"
                )
            self.tokenizer = AutoTokenizer.from_pretrained(str(local), local_files_only=True)
        elif not download:
            raise ValueError(
                f"model.weights={source}: no such local folder; give the folder save_pretrained wrote, "
                "or add model.download_weights=true to fetch it from the Hugging Face hub"
            )
        else:
            self.tokenizer = download_pretrained(AutoTokenizer, source)
        self.source = source
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.vocabulary = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.tokenize(text)

    def encode(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub's host answers a TCP connection: without this, an offline
    from_pretrained retries for about a minute, warning at each try, before it fails."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:  # the user said so: not a byte to the network
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((endpoint.hostname or "", endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def download_pretrained(auto_class: Any, name: str) -> Any:
    """``from_pretrained`` from the hub, failing in one line, at once, when there is no network
    (a copy already in the local cache is used then)."""
    online = hub_reachable()
    try:
        return auto_class.from_pretrained(name, local_files_only=not online)
    except OSError as exc:
        if not online:
            raise ValueError(
                f"model.weights={name} with model.download_weights=true: the Hugging Face hub cannot be reached from here "
                "(offline?) and no copy is in the local cache; download it where there is a network, or give model.weights=<folder>"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"model.weights={name} with model.download_weights=true: could not fetch it from the Hugging Face hub "
            f"(offline, or no such model?): {first}"
        ) from None


def build_tokenizer(
    kind: str,
    train_texts: Sequence[str],
    min_freq: int = 1,
    vocab_size: int = 8000,
    pretrained: str | None = None,
    download: bool = False,
) -> TextTokenizer:
    """The tokenizer ``data.tokenizer`` names, fitted on ``train_texts``.

    ``auto``: the pre-trained model's own tokenizer when ``model.weights`` is
    set (its ids must match its embeddings), else ``word``.
    """
    if kind not in TOKENIZERS:
        raise ValueError(f"data.tokenizer={kind!r}: choose one of {', '.join(TOKENIZERS)}")
    if kind == "auto":
        kind = "pretrained" if pretrained else "word"
    if pretrained and kind != "pretrained":
        raise ValueError(
            f"data.tokenizer={kind} with model.weights={pretrained}: a pre-trained model reads the ids of its own "
            "tokenizer; use data.tokenizer=pretrained (or auto)"
        )
    if kind == "pretrained":
        if not pretrained:
            raise ValueError("data.tokenizer=pretrained needs a pre-trained model: set model.weights=<folder save_pretrained wrote>")
        return PretrainedTokenizer(pretrained, download)
    if min_freq < 1:
        raise ValueError(f"data.min_freq={min_freq}: must be >= 1")
    if kind == "word":
        return WordTokenizer(train_texts, min_freq)
    if vocab_size < len(SPECIALS) + 1:
        raise ValueError(f"data.vocab_size={vocab_size}: must be > {len(SPECIALS)}")
    return SubwordTokenizer(kind, train_texts, vocab_size, min_freq)

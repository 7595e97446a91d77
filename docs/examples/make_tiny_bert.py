"""A small BERT folder as ``save_pretrained`` writes it (config, weights and a WordPiece
tokenizer), to try ``model=bert model.weights=<folder>`` offline. Its vocabulary is the
words of the bundled sentiment data set and its weights are random (seed 0): a folder you
fine-tuned or downloaded takes its place.

    python docs/examples/make_tiny_bert.py outputs/my-bert
    sweeplab-train data=sentiment model=bert model.weights=outputs/my-bert
"""

from __future__ import annotations

import argparse
from pathlib import Path


def make_tiny_bert(folder: Path, with_tokenizer: bool = True) -> Path:
    """A 1-layer BERT (hidden size 16) in ``folder``; without its tokenizer files if asked."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from sweeplab.data.text import SentimentDataModule
    from sweeplab.text.tokenizers import words

    folder.mkdir(parents=True, exist_ok=True)
    texts, _ = SentimentDataModule.load_texts(SentimentDataModule.__new__(SentimentDataModule))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for t in texts for w in words(t)})]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if with_tokenizer:
        BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(str(folder))
    else:
        (folder / "vocab.txt").unlink()
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=80
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write it (made if missing)")
    made = make_tiny_bert(parser.parse_args().folder)
    print(f"a 1-layer BERT with its tokenizer in {made}: model.weights={made}")

"""Text pipeline throughput: sweeplab's tokeniser and embedding_bag run vs a
hand-written PyTorch loop, in tokens per second.

The texts are Pang & Lee's sentences and the Lee news articles (gensim's test
data), repeated to ``--rows`` labelled rows in a CSV (``data=text_csv``).
Two parts, each on the same texts and batches on both sides:
- tokenise: sweeplab's ``word`` tokenizer (vocabulary from the training split,
  ids padded) vs a hand-written regex + dict + numpy padding;
- train: per-epoch time of ``model=embedding_bag`` in a sweeplab run (loss,
  accuracy, precision, recall, F1 on train and val, MLflow on) vs a plain
  loop over the same data module's loaders with the same network and
  optimizer, computing the same scores from a confusion matrix.
Reports tokens/s and the ratio of the whole pipeline (tokenise once + the
epochs); target <= 1.15.

    python benchmarks/text_pipeline.py
    python benchmarks/text_pipeline.py --rows 50000 --epochs 6 --threads 2
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweeplab.data.text import TextCsvDataModule  # noqa: E402
from sweeplab.text.corpora import gensim_data  # noqa: E402

from epoch_time import _macro_scores, sweeplab_epochs  # noqa: E402


def write_corpus(path: Path, rows: int) -> Path:
    import pandas as pd

    texts, labels = [], []
    for line in gensim_data("pang_lee_polarity.cor").read_text(encoding="cp1252", errors="replace").splitlines():
        label, _, text = line.partition(" ")
        texts.append(text)
        labels.append(label.removeprefix("__label__"))
    for i, line in enumerate(gensim_data("lee_background.cor").read_text(encoding="utf-8").splitlines()):
        texts.append(" ".join(line.split()[:60]))
        labels.append("pos" if i % 2 else "neg")
    reps = -(-rows // len(texts))
    pd.DataFrame({"text": (texts * reps)[:rows], "label": (labels * reps)[:rows]}).to_csv(path, index=False)
    return path


def hand_tokenise(texts: list[str], train: list[str], max_length: int) -> np.ndarray:
    pattern = re.compile(r"\w+(?:'\w+)?|[^\w\s]")
    counts = Counter(t for text in train for t in pattern.findall(text.lower()))
    index = {w: i + 4 for i, w in enumerate(sorted(counts, key=lambda w: (-counts[w], w)))}
    rows = [[index.get(t, 1) for t in pattern.findall(text.lower())[:max_length]] for text in texts]
    out = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def hand_epochs(dm: TextCsvDataModule, epochs: int, embedding_dim: int, hidden: int, lr: float) -> list[float]:
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    bag = torch.nn.EmbeddingBag(len(dm.tokenizer.vocabulary), embedding_dim, mode="mean", padding_idx=0)
    head = torch.nn.Sequential(torch.nn.Linear(embedding_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    net = torch.nn.ModuleDict({"bag": bag, "head": head})
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for stage, loader in (("train", train), ("val", val)):
            net.train(stage == "train")
            confusion = torch.zeros(2, 2, dtype=torch.long)
            total, count = 0.0, 0
            with torch.set_grad_enabled(stage == "train"):
                for x, y in loader:
                    out = head(bag(x)).reshape(-1)
                    loss = loss_fn(out, y.float())
                    if stage == "train":
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    preds = (out.detach() > 0).long()
                    confusion += torch.bincount(y * 2 + preds, minlength=4).reshape(2, 2)
                    total += loss.item() * len(y)
                    count += len(y)
            _macro_scores(confusion, binary=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_corpus(Path(tmp) / "texts.csv", args.rows)
        common = dict(path=str(csv), text="text", target="label", batch_size=args.batch_size, max_length=64, seed=42)
        start = time.perf_counter()
        dm = TextCsvDataModule(**common)
        dm.setup()
        ours_tok = time.perf_counter() - start
        texts = [t for split in ("train", "val", "test") for t in dm.texts[split]]
        start = time.perf_counter()
        import pandas as pd

        frame = pd.read_csv(csv)
        hand_tok = time.perf_counter() - start
        start = time.perf_counter()
        hand_tokenise(texts, dm.texts["train"], 64)
        hand_tok += time.perf_counter() - start
        tokens = int((dm.arrays("train")[0] != 0).sum())
        all_tokens = tokens + sum(int((dm.arrays(s)[0] != 0).sum()) for s in ("val", "test"))
        overrides = [
            "data=text_csv",
            f"data.path={csv}",
            "data.text=text",
            "data.target=label",
            f"data.batch_size={args.batch_size}",
            "data.max_length=64",
            "model=embedding_bag",
            "model.embedding_dim=32",
            "model.hidden_size=64",
        ]
        ours = statistics.median(sweeplab_epochs(overrides, args.epochs, Path(tmp) / "out")[1:])
        hand = statistics.median(hand_epochs(dm, args.epochs, 32, 64, 1e-3)[1:])
        del frame
    print(
        f"{args.rows} rows ({tokens:,} training tokens), batch {args.batch_size}, threads {args.threads}, epochs {args.epochs} (first dropped)"
    )
    print(
        f"tokenise (read + vocabulary + ids, all splits): sweeplab {all_tokens / ours_tok:,.0f} tokens/s, hand {all_tokens / hand_tok:,.0f} tokens/s, ratio {ours_tok / hand_tok:.2f}"
    )
    print(
        f"train epoch (train + val, 4 scores): sweeplab {tokens / ours:,.0f} tokens/s, hand {tokens / hand:,.0f} tokens/s, ratio {ours / hand:.2f}"
    )
    total_ours, total_hand = ours_tok + args.epochs * ours, hand_tok + args.epochs * hand
    print(
        f"pipeline (tokenise + {args.epochs} epochs): sweeplab {total_ours:.2f} s, hand {total_hand:.2f} s, ratio {total_ours / total_hand:.2f} (target <= 1.15)"
    )


if __name__ == "__main__":
    main()

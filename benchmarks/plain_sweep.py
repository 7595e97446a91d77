"""The 12-run digits grid as a careful user writes it without a framework.

One process, a hand-written loop, the same data split (seeded, stratified
70/15/15, standardised on the training split), the same MLP (64-128-64-10,
ReLU, dropout 0.1), Adam, 10 epochs. Per run: params logged, per epoch train
and val loss, accuracy and macro precision, recall and F1 (from a confusion
matrix, as scikit-learn computes them) in one ``log_batch`` per epoch to an
MLflow SQLite store, best and last weights kept, the best weights tested and
the test scores logged. ``benchmarks/sweep_vs_plain.py`` times it against
``sweeplab-train -m`` on the same grid.

    python benchmarks/plain_sweep.py <folder> [threads] [seeds]   # seeds 1..N (default 2: 12 runs)
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric, Param
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def grid(seeds: int = 2) -> list[tuple[float, int, int]]:
    """lr, batch size, seed: 6 runs a seed."""
    return list(itertools.product((0.001, 0.003, 0.01), (32, 64), range(1, seeds + 1)))


EPOCHS = 10


def split(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    x, y = load_digits(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.15, random_state=seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.15 / 0.85, random_state=seed, stratify=y_rest)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    scale = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    return {s: (scale(a), torch.tensor(b)) for s, a, b in (("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test))}


def scores(confusion: torch.Tensor) -> tuple[float, float, float, float]:
    tp = confusion.diag().double()
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    return (tp.sum() / confusion.sum()).item(), precision.mean().item(), recall.mean().item(), f1.mean().item()


def epoch(net: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch: int, optimizer: torch.optim.Optimizer | None) -> dict[str, float]:
    x, y = data
    net.train(optimizer is not None)
    order = torch.randperm(len(x)) if optimizer is not None else torch.arange(len(x))
    confusion = torch.zeros(10, 10, dtype=torch.long)
    total = 0.0
    with torch.set_grad_enabled(optimizer is not None):
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            out = net(x[idx])
            loss = nn.functional.cross_entropy(out, y[idx])
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            confusion += torch.bincount(y[idx] * 10 + out.argmax(1), minlength=100).reshape(10, 10)
            total += loss.item() * len(idx)
    accuracy, precision, recall, f1 = scores(confusion)
    return {"loss": total / len(x), "accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}


def main(folder: Path, seeds: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'plain.db'}")
    experiment = client.create_experiment("plain", artifact_location=(folder / "artifacts").as_uri())
    for lr, batch, seed in grid(seeds):
        torch.manual_seed(seed)
        data = split(seed)
        net = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10)
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        run = client.create_run(experiment, run_name=f"lr={lr},batch={batch},seed={seed}")
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param("lr", str(lr)), Param("batch_size", str(batch)), Param("seed", str(seed))])
        best, run_dir = float("inf"), folder / run_id
        run_dir.mkdir()
        for step in range(EPOCHS):
            train = epoch(net, data["train"], batch, optimizer)
            val = epoch(net, data["val"], batch, None)
            now = int(time.time() * 1000)
            points = [Metric(f"{stage}/{k}", v, now, step) for stage, values in (("train", train), ("val", val)) for k, v in values.items()]
            client.log_batch(run_id, metrics=points)
            torch.save(net.state_dict(), run_dir / "last.pt")
            if val["loss"] < best:
                best = val["loss"]
                torch.save(net.state_dict(), run_dir / "best.pt")
        net.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
        test = epoch(net, data["test"], batch, None)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(f"test/{k}", test[k], now, 0) for k in ("accuracy", "precision", "recall", "f1")])
        client.set_terminated(run_id, "FINISHED")


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads())
    main(Path(sys.argv[1]), int(sys.argv[3]) if len(sys.argv) > 3 else 2)

"""What making MLflow a run's one home costs on the 12-run digits grid.

The grid of the sweep benchmark (optimizer.lr=0.001,0.003,0.01 x
data.batch_size=32,64 x seed=1,2; digits, default MLP, 10 epochs) is trained
in one process, as the basic launcher does, and the time spent in each
MLflow addition is measured where it happens: the model logged as an MLflow
Model (``publish.log_run_model``), the checkpoints uploaded
(``publish.upload_checkpoints``) and the splits logged as dataset inputs
(``provenance.record``), each as a share of the grid's wall time.

    python benchmarks/mlflow_home_cost.py
    python benchmarks/mlflow_home_cost.py --epochs 3
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from sweeplab.config import compose
from sweeplab.record import provenance, publish
from sweeplab.train import run

SPENT: dict[str, float] = defaultdict(float)


def _timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    publish.log_run_model = _timed("model (item 1)", publish.log_run_model)
    publish.upload_checkpoints = _timed("checkpoints (item 2)", publish.upload_checkpoints)
    provenance.record = _timed("dataset inputs (item 5)", provenance.record)
    import sweeplab.train as train

    train.upload_checkpoints = publish.upload_checkpoints  # imported by name there
    grid = list(itertools.product((0.001, 0.003, 0.01), (32, 64), (1, 2)))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, (lr, batch, seed) in enumerate(grid):
            overrides = [
                f"optimizer.lr={lr}",
                f"data.batch_size={batch}",
                f"seed={seed}",
                f"trainer.max_epochs={args.epochs}",
                f"paths.outputs={tmp}",
                "print_config=false",
                "callbacks.progress_bar=null",
            ]
            run(compose(overrides, run_dir=Path(tmp) / f"run{i}"))
        wall = time.perf_counter() - start
    print(f"\n{len(grid)} runs, {args.epochs} epochs each, in one process: {wall:.1f} s")
    for name, seconds in SPENT.items():
        print(f"  {name}: {seconds:.2f} s in all, {seconds / len(grid) * 1000:.0f} ms a run, {seconds / wall:.1%} of the wall time")
    total = sum(SPENT.values())
    print(f"  together: {total:.2f} s, {total / wall:.1%} of the wall time")


if __name__ == "__main__":
    main()

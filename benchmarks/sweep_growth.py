"""Costs as a sweep grows: 50 runs in one process, as the basic launcher runs them.

Each run is timed and the process's resident memory read after it; the 50th
run must cost within 10% of the 5th, and memory after run 50 stay within
1.2x of after run 5 (no figures, models, loaders or MLflow clients left
behind). Time is compared as the median of runs 3-7 against that of runs
46-50, so one noisy run does not decide it.

    python benchmarks/sweep_growth.py [--runs 50] [--epochs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from sweeplab.config import compose
from sweeplab.train import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    process = psutil.Process()
    seconds, memory = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            overrides = [f"seed={i}", f"trainer.max_epochs={args.epochs}", f"paths.outputs={tmp}", "callbacks.progress_bar=null"]
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run(compose(overrides, run_dir=Path(tmp) / f"r{i}"))
            seconds.append(time.perf_counter() - start)
            memory.append(process.memory_info().rss / 2**20)
    early, late = statistics.median(seconds[2:7]), statistics.median(seconds[-5:])
    print(f"{args.runs} runs of {args.epochs} epochs in one process")
    print(f"  time a run: runs 3-7 {early:.2f} s, runs {args.runs - 4}-{args.runs} {late:.2f} s: {late / early:.2f}x (target <= 1.10)")
    print(
        f"  resident memory: after run 5 {memory[4]:.0f} MiB, after run {args.runs} {memory[-1]:.0f} MiB: {memory[-1] / memory[4]:.2f}x (target <= 1.2)"
    )


if __name__ == "__main__":
    main()

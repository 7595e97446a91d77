"""An 8-run grid with Hydra's joblib launcher (2 workers) vs the basic launcher,
and MLflow's share of a run's time.

Each launcher runs the same grid in a fresh folder and store, with one torch
thread per job so two workers do not fight over the same cores (target:
joblib >= 1.8x faster on 2 cores). MLflow's cost is a run with logger=mlflow
against the same run with logger=none (target: <= 3% of the run).

    python benchmarks/sweep_parallel.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["optimizer=adam,sgd", "seed=1,2,3,4", "data=moons", "data.n_samples=40000", "trainer.max_epochs=6", "callbacks=none"]
SINGLE = ["data=moons", "data.n_samples=40000", "trainer.max_epochs=10", "callbacks=none"]


def timed(args: list[str], cwd: Path) -> float:
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run([str(exe), *args], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        basic = timed(["-m", *GRID], Path(a))
        joblib = timed(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID], Path(b))
    print(f"8-run grid: basic launcher {basic:.1f} s, joblib (2 workers) {joblib:.1f} s, speed-up {basic / joblib:.2f}x (target >= 1.8x)")
    with tempfile.TemporaryDirectory() as tmp:
        timed([*SINGLE, "trainer.max_epochs=1"], Path(tmp))  # creates the store: a one-time cost
        with_mlflow = statistics.median(timed([*SINGLE, "logger=mlflow"], Path(tmp)) for _ in range(3))
        without = statistics.median(timed([*SINGLE, "logger=none"], Path(tmp)) for _ in range(3))
    share = (with_mlflow - without) / with_mlflow
    print(f"one run: MLflow on {with_mlflow:.2f} s, off {without:.2f} s, MLflow share {share:.1%} of the run (target <= 3%)")


if __name__ == "__main__":
    main()

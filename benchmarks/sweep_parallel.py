"""An 8-run grid with Hydra's joblib launcher (2 workers) vs the basic launcher,
and MLflow's share of a run's time.

Each launcher runs the same grid in a fresh folder and store, with one torch
thread per job so two workers do not fight over the same cores (target:
joblib >= 1.8x faster on 2 cores). MLflow's cost is a run of about one
minute with logger=mlflow against the same run with logger=none, alternated,
twice each (target: <= 3% of a one-minute run). The MLflow side pays
everything a tracked run pays in a fresh process: importing MLflow, opening
the store, the run's tags and params, one write an epoch, the files and the
model.

    python benchmarks/sweep_parallel.py [--only grid|mlflow] [--mlflow-epochs 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["optimizer=adam,sgd", "seed=1,2,3,4", "data=moons", "data.n_samples=40000", "trainer.max_epochs=6", "callbacks=none"]
SINGLE = ["data=moons", "data.n_samples=40000", "callbacks=none"]


def timed(args: list[str], cwd: Path, cpu: list[float] | None = None) -> float:
    """Wall seconds of ``sweeplab-train args``; its CPU seconds (user + system) appended to ``cpu``."""
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(exe), *args], cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("grid", "mlflow"))
    parser.add_argument("--mlflow-epochs", type=int, default=60, help="epochs of the MLflow-share run (60: about a minute here)")
    args = parser.parse_args()
    if args.only != "mlflow":
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            basic = timed(["-m", *GRID], Path(a))
            joblib = timed(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID], Path(b))
        print(
            f"8-run grid: basic launcher {basic:.1f} s, joblib (2 workers) {joblib:.1f} s, speed-up {basic / joblib:.2f}x (target >= 1.8x)"
        )
        # What bounds the speed-up: a process's start-up is paid before any job runs, once by the
        # basic launcher and once by each worker at the same time; the runs themselves split in two.
        with tempfile.TemporaryDirectory() as c:
            alone = timed([g.split(",")[0] for g in GRID], Path(c))
        run = (basic - alone) / 7
        start = alone - run
        print(
            f"  one job alone {alone:.1f} s: start-up about {start:.1f} s, a run about {run:.1f} s; with the start-up paid "
            f"once in each worker, 2 workers can at best take {start + 4 * run:.1f} s: {basic / (start + 4 * run):.2f}x"
        )
    if args.only != "grid":
        single = [*SINGLE, f"trainer.max_epochs={args.mlflow_epochs}"]
        with tempfile.TemporaryDirectory() as tmp:
            timed([*SINGLE, "trainer.max_epochs=1"], Path(tmp))  # creates the store: a one-time cost
            times: dict[str, list[float]] = {"mlflow": [], "none": []}
            cpu: dict[str, list[float]] = {"mlflow": [], "none": []}
            for _ in range(2):
                for logger in times:
                    times[logger].append(timed([*single, f"logger={logger}"], Path(tmp), cpu[logger]))
        with_mlflow, without = statistics.median(times["mlflow"]), statistics.median(times["none"])
        cpu_with, cpu_without = statistics.median(cpu["mlflow"]), statistics.median(cpu["none"])
        print(
            f"one run of {args.mlflow_epochs} epochs: MLflow on {with_mlflow:.2f} s, off {without:.2f} s, "
            f"MLflow share {(with_mlflow - without) / with_mlflow:.1%} of the run (target <= 3% of a one-minute run); "
            f"CPU time (steadier on a shared machine) {cpu_with:.2f} s vs {cpu_without:.2f} s: {(cpu_with - cpu_without) / cpu_with:.1%}"
        )
        print(f"  each run, wall s: MLflow on {times['mlflow']}, off {times['none']}")


if __name__ == "__main__":
    main()

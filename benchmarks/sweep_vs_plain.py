"""The headline: a 12-run sweep with sweeplab vs the same work in a plain script.

    sweeplab-train -m optimizer.lr=0.001,0.003,0.01 data.batch_size=32,64 seed=1,2
    (digits, default MLP, 10 epochs, basic launcher)

against ``benchmarks/plain_sweep.py`` (a hand loop logging the same metrics to
an MLflow SQLite store, keeping best and last weights, testing the best).
Both run as the user runs them, in a fresh process and folder; the ratio of
their wall times is the target (<= 1.3x). ``--joblib`` adds the same sweep on
Hydra's joblib launcher with 2 workers (target: faster than the plain script).

Then the same 12 runs in this process with a timer around each step of
``sweeplab.train.run``, for the breakdown per run.

Fused sweeps (``--fused``): the same grid on ``hydra/launcher=fused`` (target <= 1.3x,
goal 1.0x), then the grid over seeds 1-8, 48 runs, fused and basic against the plain
script (target <= 0.9x, goal 0.6x). Each fused sweep runs twice: its groups in turn in
one process (``hydra.launcher.n_jobs=1``), and side by side in 2 worker processes
(``hydra.launcher.n_jobs=2``, each worker's torch on cores / 2 threads, as the launcher sets
it). The default, ``n_jobs=auto``, picks a worker a core from 4 jobs a worker: 2 workers for both grids on 2 cores.

    python benchmarks/sweep_vs_plain.py [--joblib] [--fused] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

GRID = ["optimizer.lr=0.001,0.003,0.01", "data.batch_size=32,64", "seed=1,2"]
HERE = Path(__file__).resolve().parent


def _wall(command: list[str], cwd: Path, threads: int | None) -> float:
    """Seconds ``command`` took; ``threads`` None: each process's torch threads as sweeplab sets them."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if threads is None:
        env.pop("OMP_NUM_THREADS")
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


SPENT: dict[str, float] = defaultdict(float)


def _timed(owner: object, name: str, label: str) -> None:
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def breakdown(threads: int) -> None:
    """The grid in this process, each step of run() timed."""
    import itertools

    import lightning.pytorch as pl
    import torch

    from sweeplab import console, train
    from sweeplab.config import compose
    from sweeplab.families.torch.family import TorchFamily
    from sweeplab.record import provenance, tracking
    from sweeplab.record.run import RunRecord
    from sweeplab.reports import files as reports

    torch.set_num_threads(threads)
    _timed(train, "check_config", "config checks")
    _timed(console, "print_config", "config tree printed")
    _timed(TorchFamily, "prepare", "data set-up and model")
    _timed(RunRecord, "open", "MLflow run created (tags, stale-run check)")
    _timed(TorchFamily, "attach", "trainer set-up")
    _timed(tracking, "describe_run", "MLflow params and tags")
    _timed(provenance, "record", "MLflow dataset inputs")
    _timed(provenance, "write_diff", "git state")
    _timed(pl.Trainer, "fit", "epochs (fit)")
    _timed(pl.Trainer, "test", "test")
    _timed(reports, "write_test_report", "reports (CSV, PNG)")
    _timed(RunRecord, "finish", "MLflow artifacts, checkpoints, model, status")
    _timed(RunRecord, "leave", "teardown")
    grid = list(itertools.product((0.001, 0.003, 0.01), (32, 64), (1, 2)))
    with tempfile.TemporaryDirectory() as tmp:
        # One run first, not counted: MLflow, its SQL store and matplotlib are imported by a
        # process's first run (about 2.5 s), which would otherwise land in the steps of run 1.
        train.run(compose(["trainer.max_epochs=1", f"paths.outputs={tmp}"], run_dir=Path(tmp) / "warm-up"))
        SPENT.clear()
        start = time.perf_counter()
        for i, (lr, batch, seed) in enumerate(grid):
            t = time.perf_counter()
            cfg = compose(
                [f"optimizer.lr={lr}", f"data.batch_size={batch}", f"seed={seed}", f"paths.outputs={tmp}"], run_dir=Path(tmp) / f"r{i}"
            )
            SPENT["config composition"] += time.perf_counter() - t
            train.run(cfg)
        wall = time.perf_counter() - start
    print(
        f"\nbreakdown: the 12 runs in one process (imports already paid by a warm-up run) took {wall:.1f} s, {wall / len(grid):.2f} s a run"
    )
    for label, seconds in sorted(SPENT.items(), key=lambda kv: -kv[1]):
        print(f"  {label:48s} {seconds / len(grid) * 1000:7.0f} ms a run  {seconds / wall:6.1%}")
    print(f"  {'other (between the steps above)':48s} {(wall - sum(SPENT.values())) / len(grid) * 1000:7.0f} ms a run")


def _fused_48(python: str, sweeplab_train: str, threads: int) -> None:
    """The grid over seeds 1-8: 48 runs, fused and basic launchers against the plain script."""
    grid = [*GRID[:2], "seed=range(1,9)"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = _wall([python, str(HERE / "plain_sweep.py"), str(folder / "plain"), str(threads), "8"], folder, threads)
        fused = _wall([sweeplab_train, "-m", "hydra/launcher=fused", "hydra.launcher.n_jobs=1", *grid], folder / "fused", threads)
        workers = _wall([sweeplab_train, "-m", "hydra/launcher=fused", "hydra.launcher.n_jobs=2", *grid], folder / "fused2", None)
        basic = _wall([sweeplab_train, "-m", *grid], folder / "basic", threads)
    print(
        f"48-run grid (seeds 1-8): plain script {plain:.1f} s; fused launcher, one process {fused:.1f} s: {fused / plain:.2f}x "
        "(target <= 0.9x, goal 0.6x);"
    )
    print(f"  fused, groups side by side in 2 workers (n_jobs=auto on 2 cores): {workers:.1f} s: {workers / plain:.2f}x")
    print(f"  basic launcher {basic:.1f} s: {basic / plain:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--joblib", action="store_true", help="also the sweep on the joblib launcher, 2 workers")
    parser.add_argument("--fused", action="store_true", help="also hydra/launcher=fused, on this grid and on seeds 1-8 (48 runs)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    python = sys.executable
    sweeplab_train = str(Path(python).with_name("sweeplab-train"))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, tempfile.TemporaryDirectory() as c:
        imports = _wall([python, "-c", "import sweeplab.train, lightning.pytorch, mlflow"], Path(a), args.threads)
        plain = _wall([python, str(HERE / "plain_sweep.py"), str(Path(a) / "plain"), str(args.threads)], Path(a), args.threads)
        ours = _wall([sweeplab_train, "-m", *GRID], Path(b), args.threads)
        print(f"12-run grid: sweeplab-train -m {ours:.1f} s, plain script {plain:.1f} s: {ours / plain:.2f}x (target <= 1.3x)")
        print(f"  per run: {ours / 12:.2f} s vs {plain / 12:.2f} s; start-up (imports) once: {imports:.1f} s")
        if args.joblib:
            parallel = _wall([sweeplab_train, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID], Path(c), 1)
            print(f"  joblib, 2 workers: {parallel:.1f} s: {parallel / plain:.2f}x the plain script (target < 1)")
        if args.fused:
            fused = _wall([sweeplab_train, "-m", "hydra/launcher=fused", "hydra.launcher.n_jobs=1", *GRID], Path(c) / "f12", args.threads)
            print(f"  fused launcher, one process: {fused:.1f} s: {fused / plain:.2f}x the plain script (target <= 1.3x, goal 1.0x)")
            command = [sweeplab_train, "-m", "hydra/launcher=fused", "hydra.launcher.n_jobs=2", *GRID]
            workers = _wall(command, Path(c) / "f12w", None)
            print(f"  fused, groups side by side in 2 workers (n_jobs=auto on 2 cores): {workers:.1f} s: {workers / plain:.2f}x")
    if args.fused:
        _fused_48(python, sweeplab_train, args.threads)
    breakdown(args.threads)


if __name__ == "__main__":
    main()

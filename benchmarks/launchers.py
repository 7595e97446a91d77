"""From a laptop to a cluster: the same 8-run sweep on each launcher, and what
pruning buys an Optuna search.

1. ``sweeplab-train -m seed=1..8`` (digits MLP, 5 epochs) on the basic launcher,
   joblib (2 workers), submitit_local and submitit_slurm (a cluster must answer
   ``sinfo``; ``tests/slurm/start_cluster.sh`` starts a one-node one as root):
   wall time of the whole command, each in a fresh folder and store.
2. An Optuna TPE search on digits (same seed, 16 trials, 10 epochs a trial)
   with ``pruner=none`` and ``pruner=median``: how many trials, how many
   epochs and how much wall time until a trial reaches ``--target`` val/accuracy.

    python benchmarks/launchers.py [--skip-launchers] [--skip-pruning] [--target 0.95]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = str(Path(sys.executable).with_name("sweeplab-train"))
SHORT = ["trainer.max_epochs=5", "callbacks=none", "print_config=false", "logger.log_model=false"]
LAUNCHERS = {
    "basic": [],
    "joblib, 2 workers": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "submitit_local": ["hydra/launcher=submitit_local"],
    "submitit_slurm": ["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1"],
}


def _run(args: list[str], cwd: Path) -> tuple[float, str]:
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    done = subprocess.run([EXE, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stdout


def launchers() -> None:
    cluster = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    print("8 runs (digits MLP, 5 epochs), wall time of the command:")
    basic = None
    for name, args in LAUNCHERS.items():
        if name == "submitit_slurm" and not cluster:
            print(f"  {name:18s} not measured: no SLURM cluster answers sinfo here")
            continue
        with tempfile.TemporaryDirectory() as folder:
            seconds, _ = _run(["-m", *args, "seed=1,2,3,4,5,6,7,8", *SHORT], Path(folder))
        basic = basic or seconds
        print(f"  {name:18s} {seconds:6.1f} s   {basic / seconds:4.2f}x the basic launcher's speed", flush=True)


def pruning(target: float, trials: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"\nOptuna TPE on digits (seed 0, {trials} trials, 10 epochs each, val/accuracy maximised), target {target}:")
    for pruner in ("none", "median"):
        with tempfile.TemporaryDirectory() as folder:
            db = Path(folder) / "study.db"
            args = [
                "-m",
                "hydra/sweeper=optuna",
                "optimized_metric=val/accuracy",
                "hydra.sweeper.seed=0",
                f"hydra.sweeper.n_trials={trials}",
            ]
            args += [f"hydra.sweeper.pruner={pruner}", f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.n_startup_trials=3"]
            args += ["optimizer=choice(adam, sgd)", "optimizer.lr=tag(log, interval(0.0001, 1.0))", "data.batch_size=choice(32, 128)"]
            args += ["trainer.max_epochs=10", "callbacks=none", "print_config=false", "logger.log_model=false"]
            seconds, _ = _run(args, Path(folder))
            study = optuna.load_study(study_name="sweeplab", storage=f"sqlite:///{db}")
            done = sorted(study.trials, key=lambda t: t.number)
            epochs, reached = 0, None
            for t in done:
                epochs += len(t.intermediate_values) if pruner != "none" else 10
                if reached is None and t.state.name == "COMPLETE" and t.value is not None and t.value >= target:
                    reached = (t.number + 1, epochs)
            pruned = sum(t.state.name == "PRUNED" for t in done)
            best = max((t.value for t in done if t.value is not None), default=float("nan"))
            where = f"reached at trial {reached[0]} after {reached[1]} epochs" if reached else "never reached"
            print(f"  pruner={pruner:6s} {where}; {epochs} epochs in all, {pruned} pruned, best {best:.4f}, {seconds:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-launchers", action="store_true")
    parser.add_argument("--skip-pruning", action="store_true")
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--trials", type=int, default=16)
    options = parser.parse_args()
    if not options.skip_launchers:
        launchers()
    if not options.skip_pruning:
        pruning(options.target, options.trials)


if __name__ == "__main__":
    main()

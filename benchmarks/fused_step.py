"""A trial's training epoch in a fused group of 16 digits MLPs against a solo sweeplab run's epoch.

The solo run is ``benchmarks/epoch_time.py``'s measurement (the default digits MLP, MLflow on,
no checkpoint callbacks, the time from one training epoch's start to the next: its steps,
validation and logging). The group is ``sweeplab-train -m hydra/launcher=fused
'seed=range(1,17)'`` with the same settings, timed from the epoch lines the launcher prints
(the same span: the group's steps, validation, per-trial logging). Reported: the group's
epoch divided by 16, over the solo epoch (target <= 0.3x: a fused trial's step costs under a
third of a solo one); first epochs dropped as warm-up (the solo side's median, the group's mean: its
marks are printed to 0.1 s).

    python benchmarks/fused_step.py [--trials 16] [--epochs 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import sweeplab_epochs  # noqa: E402

SAME = ["callbacks=none", "trainer.enable_model_summary=false"]


def fused_epochs(trials: int, epochs: int, threads: int, outputs: Path) -> list[float]:
    """When each of the group's epochs ended, from the launcher's 'epoch k/n ... (t s)' lines (t: since the group started, to 0.1 s)."""
    exe = Path(sys.executable).with_name("sweeplab-train")
    command = [
        str(exe),
        "-m",
        "hydra/launcher=fused",
        f"seed=range(1,{trials + 1})",
        f"trainer.max_epochs={epochs}",
        f"hydra.launcher.max_group={trials}",
        f"paths.outputs={outputs}",
        "print_config=false",
        *SAME,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("MLFLOW_TRACKING_URI", None)
    ran = subprocess.run(command, cwd=outputs, env=env, capture_output=True, text=True, check=True)
    marks = [float(t) for t in re.findall(r"epoch \d+/\d+, \d+ of \d+ trials training \(([\d.]+) s\)", ran.stdout)]
    if len(marks) != epochs or f"jobs {', '.join(map(str, range(trials)))} train together" not in ran.stdout:
        raise SystemExit(f"the {trials} trials did not train as one group:\n{ran.stdout[-2000:]}")
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        solo = statistics.median(sweeplab_epochs(["seed=1", *SAME[:1]], args.epochs, Path(tmp) / "solo")[1:])
        (Path(tmp) / "fused").mkdir()
        marks = fused_epochs(args.trials, args.epochs, args.threads, Path(tmp) / "fused")
        group = (marks[-1] - marks[0]) / (len(marks) - 1)  # the mean after the first: the marks are to 0.1 s
    per_trial = group / args.trials
    print(
        f"digits MLP, {args.threads} threads, {args.epochs} epochs (first dropped), MLflow on: "
        f"solo run {solo * 1000:.1f} ms/epoch; fused group of {args.trials} {group * 1000:.1f} ms/epoch, "
        f"{per_trial * 1000:.1f} ms a trial: {per_trial / solo:.2f}x a solo epoch (target <= 0.3x)"
    )


if __name__ == "__main__":
    main()

"""README result tables from one command: run presets over several seeds and
print each configuration's mean ± sample standard deviation as Markdown.

    python benchmarks/preset_tables.py optimizers_digits sparse_adam_digits --seeds 1 2 3
    python benchmarks/preset_tables.py schedulers_digits --seeds 1 2 3

Runs land in their own store (``--outputs``, default outputs/tables) and a run
that already FINISHED there is reused (skip_finished), so a second call only
prints. The caption names the machine and torch's thread count: results of
the same seed can differ in the last digits between thread counts (the order
of floating-point sums changes), most for LBFGS, whose line search amplifies it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

SKIPPED = ("seed=", "experiment=", "paths.", "hydra.", "callbacks.progress_bar")


def run_preset(preset: str, seeds: list[int], outputs: Path) -> None:
    exe = Path(sys.executable).with_name("sweeplab-train")
    command = [
        str(exe),
        "-m",
        f"experiment={preset}",
        f"seed={','.join(map(str, seeds))}",
        f"paths.outputs={outputs}",
        "callbacks.progress_bar=null",
    ]
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def label(run_name: str) -> str:
    """The run's name without what differs between replicates (seed) or names the preset."""
    kept = [part for part in str(run_name).split(",") if not part.startswith(SKIPPED)]
    return ",".join(kept) or "(the preset as it is)"


def table(uri: str, experiment: str, metrics: list[str]) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    runs["config"] = runs["tags.mlflow.runName"].map(label)
    columns = [f"metrics.{m}" for m in metrics]
    grouped = runs.groupby("config")[columns].agg(["mean", "std", "count"]).sort_values((columns[0], "mean"), ascending=False)
    lines = [f"| configuration | {' | '.join(f'{m} (mean ± sd)' for m in metrics)} | runs |", "|---" * (len(metrics) + 2) + "|"]
    for name, row in grouped.iterrows():
        cells = [f"{row[(c, 'mean')]:.4f} ± {row[(c, 'std')]:.4f}" for c in columns]
        lines.append(f"| `{name}` | {' | '.join(cells)} | {int(row[(columns[0], 'count')])} |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("presets", nargs="+", help="experiment presets (experiments/*.yaml); presets sharing an experiment share a table")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--metrics", nargs="+", default=["test/accuracy", "test/f1"])
    parser.add_argument("--outputs", default="outputs/tables", help="outputs folder (and MLflow store) for these runs")
    args = parser.parse_args()

    from sweeplab.config import compose

    outputs = Path(args.outputs).resolve()
    experiments: list[str] = []
    for preset in args.presets:
        run_preset(preset, args.seeds, outputs)
        name = compose([f"experiment={preset}"]).experiment_name
        if name not in experiments:
            experiments.append(name)
    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    for name in experiments:
        print(f"\n`{name}`, seeds {', '.join(map(str, args.seeds))}; {machine()}:\n")
        print(table(uri, name, args.metrics))


if __name__ == "__main__":
    main()

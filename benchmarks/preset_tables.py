"""The result tables of the docs (docs/presets.md) from one command: run presets over several seeds and
print each configuration's mean ± sample standard deviation as Markdown, with
its verdict against the best configuration on the first metric (a paired
t-test over the seeds, Holm-corrected: ``sweeplab.significance``).

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
    parts = str(run_name).split(",")
    kept = [part for part in parts if not part.startswith(SKIPPED)]
    # A preset that sets its config in its own file (sparse_adam_digits) is named by the preset.
    preset = [part for part in parts if part.startswith("experiment=")]
    return ",".join(kept) or (preset[0] if preset else "(the preset as it is)")


def table(uri: str, experiment: str, metrics: list[str]) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    from sweeplab.record.tags import is_sweep_run

    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    runs = runs[~is_sweep_run(runs)].copy()  # a sweep's own run is its summary, not a configuration
    runs["config"] = runs["tags.mlflow.runName"].map(label)
    columns = [f"metrics.{m}" for m in metrics]
    grouped = runs.groupby("config")[columns].agg(["mean", "std", "count"]).sort_values((columns[0], "mean"), ascending=False)
    verdicts = versus_best(runs, metrics[0])
    header = f"| configuration | {' | '.join(f'{m} (mean ± sd)' for m in metrics)} | runs | vs the best, {metrics[0]} (paired t, Holm) |"
    lines = [header, "|---" * (len(metrics) + 3) + "|"]
    for name, row in grouped.iterrows():
        cells = ["—" if row[(c, "mean")] != row[(c, "mean")] else f"{row[(c, 'mean')]:.4f} ± {row[(c, 'std')]:.4f}" for c in columns]
        lines.append(f"| `{name}` | {' | '.join(cells)} | {int(row[(columns[0], 'count')])} | {verdicts.get(name, '')} |")
    return "\n".join(lines)


def versus_best(runs, metric: str) -> dict[str, str]:
    """Each configuration's verdict against the best one, paired over seeds (sweeplab.significance)."""
    import sweeplab

    frame = runs.assign(seed=runs["params.seed"], **{metric: runs[f"metrics.{metric}"]})
    if frame["config"].nunique() < 2:
        return {}
    result = sweeplab.significance(frame, by="config", over="seed", metric=metric)
    verdicts = {result["group"].iloc[0]: "best"}
    for row in result.itertuples():
        needed = "" if row.n_needed != row.n_needed else f", {int(row.n_needed)} seeds for 80% power"
        p = "" if row.test == "none" else f" (p Holm {row.p_holm:.2g}{needed})"
        verdicts[row.versus] = f"{row.verdict}{p}"
    return verdicts


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

"""With dropout, do fused trials score as their solo runs do? Test scores over seeds, side by side.

A fused trial draws its dropout masks from the group's generator (``vmap(randomness="different")``),
not from its own seed's stream as its solo run does, so its numbers differ from its solo run's as
another draw of the masks would: same initial weights, split and batch order, other masks. This
runs the same seeds twice, each in a fresh process and folder: one after another (Hydra's basic
launcher) and as one fused group (``hydra/launcher=fused``, one process); then compares their
``test/accuracy`` and ``test/loss`` with ``sweeplab.significance``, paired on the seed (a seed's two
runs share everything but the masks): the mean difference, its 95% interval, the paired t-test and
whether the two can be told apart. A group that drew the same masks for every trial, or none,
would show here as a shift of the mean.

    python benchmarks/fused_dropout.py                  # 16 seeds, 10 epochs, the digits MLP (dropout 0.1)
    python benchmarks/fused_dropout.py --seeds 32 --dropout 0.3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fused_gpu import sweep  # this folder is the script's: on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--dropout", type=float, default=0.1)
    options = parser.parse_args()
    import pandas as pd

    import sweeplab

    grid = [
        f"seed=range({options.first_seed},{options.first_seed + options.seeds})",
        f"trainer.max_epochs={options.epochs}",
        f"model.dropout={options.dropout}",
        "print_config=false",
        "logger.log_model=false",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        frames = []
        for name, launcher in (("solo", []), ("fused", ["hydra/launcher=fused", "hydra.launcher.n_jobs=1"])):
            folder = Path(tmp) / name
            wall, _, _ = sweep([*launcher, *grid], folder)
            runs = sweeplab.runs(store=f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
            print(f"{name}: {len(runs)} runs in {wall:.1f} s")
            frames.append(runs.assign(launcher=name))
        frame = pd.concat(frames, ignore_index=True)
    seeds = f"{options.first_seed}-{options.first_seed + options.seeds - 1}"
    print(f"\ndigits MLP, dropout {options.dropout}, {options.epochs} epochs, seeds {seeds}:")
    for metric in ("test/accuracy", "test/loss"):
        by_launcher = frame.groupby("launcher")[metric]
        means, sds = by_launcher.mean(), by_launcher.std()
        print(
            f"  {metric}: solo {means['solo']:.4f} ± {sds['solo']:.4f}, fused {means['fused']:.4f} ± {sds['fused']:.4f} (mean ± sd over seeds)"
        )
        result = sweeplab.significance(frame, by=["launcher"], over="seed", metric=metric)
        for row in result.itertuples():  # the better group first: said as fused - solo either way
            sign = 1 if row.group == "fused" else -1
            low, high = sorted((sign * row.ci_low, sign * row.ci_high))
            print(
                f"    fused - solo: {sign * row.mean_diff:+.4f} [{low:+.4f}, {high:+.4f}], "
                f"{row.test} p={row.p_value:.3f} over {row.n} seeds: {f'{row.group} better' if row.verdict == 'better' else row.verdict}"
            )


if __name__ == "__main__":
    main()

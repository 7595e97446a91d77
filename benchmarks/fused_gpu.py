"""Fused trials on one device against the same trials one after another: trials per hour and memory.

For each model (32 digits MLPs; 16 small CNNs on digits as 8x8 images, without BatchNorm, whose
running statistics the fused launcher cannot vectorise) and each precision, the same seeds run
twice from a fresh process and folder: as one fused group (``hydra/launcher=fused``), and one
after another (Hydra's basic launcher, one process). Reported: each sweep's wall time, trials per
hour, the ratio (goal >= 5x on a GPU; a precision groups do not train in is named, and
skipped), and on a GPU the device memory in use at the sweep's peak
(``nvidia-smi``, sampled every 0.2 s) less what was in use before it started, per trial that
held memory at once (all of a fused group; one at a time otherwise, so that figure is a solo
run's, its CUDA context included).

    python benchmarks/fused_gpu.py                       # accelerator=gpu, 32-true and bf16-mixed
    python benchmarks/fused_gpu.py --accelerator cpu --mlp 4 --cnn 2 --epochs 1 --precision 32-true  # a quick check
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MODELS = {"mlp": ["model=mlp"], "cnn": ["model=cnn", "+model.batch_norm=false"]}


class DeviceMemory:
    """The most memory in use on GPU 0 while it runs, in MiB (None without nvidia-smi)."""

    def __init__(self) -> None:
        self.tool = shutil.which("nvidia-smi")
        self.peak: int | None = None
        self._stop = threading.Event()

    def now(self) -> int | None:
        if self.tool is None:
            return None
        out = subprocess.run(
            [self.tool, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"], capture_output=True, text=True
        )
        return int(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            used = self.now()
            if used is not None:
                self.peak = max(self.peak or 0, used)

    def __enter__(self) -> DeviceMemory:
        self.before = self.now()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sweep(args: list[str], folder: Path) -> tuple[float, int | None, str]:
    """Wall time of ``sweeplab-train -m args`` in a fresh folder; the device memory it added at its peak; its summary."""
    folder.mkdir(parents=True)
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with DeviceMemory() as memory:
        start = time.perf_counter()
        ran = subprocess.run([str(exe), "-m", *args], cwd=folder, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if ran.returncode != 0:
        raise SystemExit(f"sweeplab-train -m {' '.join(args)} failed:\n{ran.stderr[-3000:]}")
    added = memory.peak - memory.before if memory.peak is not None and memory.before is not None else None
    summary = "\n".join(line for line in ran.stdout.splitlines() if "trained together" in line or "trained alone" in line)
    return wall, added, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument("--mlp", type=int, default=32, help="MLP trials")
    parser.add_argument("--cnn", type=int, default=16, help="CNN trials")
    parser.add_argument("--epochs", type=int, default=10)
    options = parser.parse_args()
    common = [f"trainer.accelerator={options.accelerator}", f"trainer.max_epochs={options.epochs}", "print_config=false"]
    print(
        f"{'model':5} {'precision':11} {'trials':>6} | {'fused':>9} {'in turn':>9} | {'trials/h fused':>14} {'in turn':>9} {'ratio':>6} | memory a trial (fused, in turn)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, trials in (("mlp", options.mlp), ("cnn", options.cnn)):
            if trials < 2:
                continue
            for precision in options.precision:
                args = [*MODELS[name], *common, f"trainer.precision={precision}", f"seed=range(1,{trials + 1})"]
                where = Path(tmp) / f"{name}-{precision}"
                one_group = [
                    "hydra/launcher=fused",
                    f"hydra.launcher.max_group={trials}",
                    "hydra.launcher.n_jobs=1",
                ]  # auto would split a CPU group among workers
                fused, fused_memory, summary = sweep([*one_group, *args], where / "fused")
                if "trained together" not in summary or "trained alone" in summary:  # e.g. 16-mixed: its loss scaler is per run
                    why = summary.splitlines()[-1].split(": ", 1)[-1] if summary else "no summary"
                    print(f"{name:5} {precision:11} {trials:>6} | the trials did not train as one group: {why}", flush=True)
                    continue
                alone, alone_memory, _ = sweep(args, where / "in-turn")
                per_hour = (3600 * trials / fused, 3600 * trials / alone)
                memory = (
                    f"{fused_memory / trials:.0f} MiB, {alone_memory:.0f} MiB"
                    if fused_memory is not None and alone_memory is not None
                    else "n/a (no nvidia-smi)"
                )
                print(
                    f"{name:5} {precision:11} {trials:>6} | {fused:8.1f}s {alone:8.1f}s | "
                    f"{per_hour[0]:>14.0f} {per_hour[1]:>9.0f} {alone / fused:5.2f}x | {memory}",
                    flush=True,
                )


if __name__ == "__main__":
    main()

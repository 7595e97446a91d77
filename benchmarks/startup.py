"""Process start to first training step, vs `python -c "import torch, sklearn"`.

Runs each command N times in fresh processes and compares medians
(target: sweeplab at most 1.5 s more).

    python benchmarks/startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def first_step_seconds(workdir: Path) -> float:
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.time()
    out = subprocess.run(
        [str(exe), "callbacks=none", "+callbacks.exit._target_=bench_callbacks.ExitAtFirstStep"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    stamp = next(line for line in out.stdout.splitlines() if line.startswith("FIRST_STEP_AT"))
    return float(stamp.split()[1]) - start


def baseline_seconds() -> float:
    start = time.time()
    subprocess.run([sys.executable, "-c", "import torch, sklearn"], check=True)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        first_step_seconds(Path(tmp))  # warm the disk cache and create the store once
        ours = [first_step_seconds(Path(tmp)) for _ in range(args.repeat)]
    base = [baseline_seconds() for _ in range(args.repeat)]
    ours_m, base_m = statistics.median(ours), statistics.median(base)
    print(
        f"import torch, sklearn: {base_m:.2f} s; sweeplab-train to first step: {ours_m:.2f} s; "
        f"difference {ours_m - base_m:+.2f} s (target <= +1.5 s), ratio {ours_m / base_m:.2f}"
    )


if __name__ == "__main__":
    main()

"""Start-up costs, each in fresh processes (medians of --repeat runs):

- process start to the first training step of the default run, against
  ``python -c "import lightning.pytorch"`` (target: at most 0.8 s more);
- a bad-input error (a CSV file that does not exist) from start to exit: the
  one line comes before Lightning is imported;
- a classical run (``model=knn``, iris) from start to exit, against
  ``python -c "import sklearn, mlflow"``, and which of Lightning, torchmetrics,
  torchvision and torch it imported (it should need none of the first three).

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
HEAVY = ("lightning", "torchmetrics", "torchvision", "torch")
# sweeplab-train's main, with a note of which heavy packages the process imported, printed at exit.
TRAIN_AND_LIST = (
    "import atexit, sys\n"
    f"atexit.register(lambda: print('IMPORTED', ','.join(m for m in {HEAVY!r} if m in sys.modules), flush=True))\n"
    "sys.argv[0] = 'sweeplab-train'\n"
    "from sweeplab.train import main\n"
    "main()\n"
)


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, out.stdout + out.stderr


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


def bad_input_seconds(workdir: Path) -> float:
    exe = Path(sys.executable).with_name("sweeplab-train")
    seconds, output = _timed([str(exe), "data=csv", f"data.path={workdir / 'missing.csv'}", "data.target=y"], workdir)
    assert "error:" in output, output[-2000:]
    return seconds


def classical_run(workdir: Path) -> tuple[float, str]:
    args = ["model=knn", "data=iris", "print_config=false", "logger.log_model=false"]
    seconds, output = _timed([sys.executable, "-c", TRAIN_AND_LIST, *args], workdir)
    imported = next((line.split(" ", 1)[1] if " " in line else "" for line in output.splitlines() if line.startswith("IMPORTED")), "?")
    return seconds, imported


def import_seconds(statement: str) -> float:
    return _timed([sys.executable, "-c", statement], Path.cwd())[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    med = statistics.median
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        first_step_seconds(workdir)  # warm the disk cache and create the store once
        first = med([first_step_seconds(workdir) for _ in range(args.repeat)])
        bad = med([bad_input_seconds(workdir) for _ in range(args.repeat)])
        classical = [classical_run(workdir) for _ in range(args.repeat)]
    lightning = med([import_seconds("import lightning.pytorch") for _ in range(args.repeat)])
    torch = med([import_seconds("import torch") for _ in range(args.repeat)])
    sk_mlflow = med([import_seconds("import sklearn, mlflow") for _ in range(args.repeat)])
    classical_s = med([s for s, _ in classical])
    print(
        f"import lightning.pytorch: {lightning:.2f} s; sweeplab-train to first step: {first:.2f} s; "
        f"difference {first - lightning:+.2f} s (target <= +0.8 s)"
    )
    print(f"import torch: {torch:.2f} s; a bad-input error (missing CSV) from start to exit: {bad:.2f} s")
    print(
        f"import sklearn, mlflow: {sk_mlflow:.2f} s; model=knn on iris from start to exit: {classical_s:.2f} s "
        f"({classical_s / sk_mlflow:.2f}x); it imported: {classical[-1][1] or 'none of ' + ', '.join(HEAVY)}"
    )


if __name__ == "__main__":
    main()

"""Draw the pictures the documentation shows, with sweeplab's own commands, into docs/images.

    python docs/make_pictures.py

Runs in a temporary folder (its own MLflow store): the default run's confusion matrix, a
value-iteration policy on FrozenLake, a self-organising map of digits, and the compare plot of
a 3-run learning-rate sweep. The MLflow UI screenshot comes from the browser test:
SWEEPLAB_SCREENSHOTS=docs/images pytest tests/test_server.py -k browser
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"
BIN = Path(sys.executable).parent
COMMANDS = [
    ["sweeplab-train", "print_config=false"],
    ["sweeplab-train", "env=frozen_lake", "agent=value_iteration", "print_config=false"],
    ["sweeplab-train", "model=som", "print_config=false"],
    ["sweeplab-train", "-m", "optimizer.lr=0.001,0.003,0.01", "trainer.max_epochs=5", "print_config=false"],
    ["sweeplab", "compare", "--metric", "test/f1", "--out", "compare"],
]


def newest(folder: Path, name: str) -> Path:
    found = sorted(folder.rglob(name), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"make_pictures: no {name} under {folder}")
    return found[-1]


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for command in COMMANDS:
            print("$", " ".join(command), flush=True)
            subprocess.run([str(BIN / command[0]), *command[1:]], cwd=work, check=True, stdout=subprocess.DEVNULL)
        runs = work / "outputs" / "runs"
        shutil.copy(newest(runs, "confusion_matrix.png"), IMAGES / "confusion_matrix.png")
        shutil.copy(newest(runs, "policy_map.png"), IMAGES / "policy_map.png")
        shutil.copy(newest(runs, "som_maps.png"), IMAGES / "som_maps.png")
        shutil.copy(work / "compare" / "compare_sweeplab_test_f1.png", IMAGES / "compare_plot.png")
    print(f"wrote {', '.join(sorted(p.name for p in IMAGES.glob('*.png')))} in {IMAGES}")


if __name__ == "__main__":
    main()

"""A user's large table: data=csv on 1,000,000 rows x 20 numeric columns.

Two fresh processes on the same generated file: sweeplab (``data=csv``, the
default MLP, one epoch, MLflow on) and a hand-written baseline
(``pandas.read_csv``, float32 tensors, a 15% validation split, the same MLP, one epoch and a validation pass). Reported:
load + first epoch, wall time of each (target: sweeplab <= 1.3x), and the
memory each adds over its imports at its peak, against the size of the data
as one float32 array (target: <= 3x).

    python benchmarks/csv_scale.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SWEEPLAB = """
import json, resource, sys, time, contextlib, io
from pathlib import Path
import psutil
import sweeplab.train, lightning.pytorch, mlflow, pandas, torch
from sweeplab.config import compose
sys.path.insert(0, sys.argv[3])
import bench_callbacks
base = psutil.Process().memory_info().rss
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    sweeplab.train.run(compose([f"data=csv", f"data.path={sys.argv[1]}", "data.target=target", "data.batch_size=1024",
        "trainer.max_epochs=1", "callbacks.progress_bar=null", f"paths.outputs={sys.argv[2]}",
        "+callbacks.epoch_end._target_=bench_callbacks.EpochEndTimer"], run_dir=Path(sys.argv[2]) / "run"))
whole = time.perf_counter() - start
print(json.dumps({"seconds": bench_callbacks.EPOCH_ENDS[0] - start, "whole": whole, "base": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

BASELINE = """
import json, resource, sys, time
import psutil, pandas as pd, torch, mlflow, lightning.pytorch
from torch import nn
base = psutil.Process().memory_info().rss
start = time.perf_counter()
frame = pd.read_csv(sys.argv[1])
y = torch.tensor(frame.pop("target").to_numpy() > 0.5, dtype=torch.long)
x = torch.from_numpy(frame.to_numpy("float32"))
del frame
order = torch.randperm(len(x))
val, x, y_val, y = x[order[:150000]], x[order[150000:]], y[order[:150000]], y[order[150000:]]
mean, std = x.mean(0), x.std(0)
x, val = (x - mean) / std, (val - mean) / std
net = nn.Sequential(nn.Linear(x.shape[1], 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 2))
opt = torch.optim.Adam(net.parameters(), 1e-3)
for idx in torch.randperm(len(x)).split(1024):
    loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
with torch.no_grad():
    correct = sum((net(val[i]).argmax(1) == y_val[i]).sum().item() for i in torch.arange(len(val)).split(1024))
print(json.dumps({"seconds": time.perf_counter() - start, "base": base, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    import numpy as np
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        rng = np.random.default_rng(0)
        x = rng.normal(size=(args.rows, 20)).astype(np.float32)
        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(20)])
        frame["target"] = (x[:, 0] + x[:, 1] > 0).astype(int)
        frame.to_csv(path, index=False, float_format="%.6g")
        array_bytes = args.rows * 20 * 4
        results = {}
        for name, code in (("baseline", BASELINE), ("sweeplab", SWEEPLAB)):
            out = subprocess.run(
                [sys.executable, "-c", code, str(path), tmp, str(Path(__file__).parent)], capture_output=True, text=True, check=True
            )
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ours, hand = results["sweeplab"], results["baseline"]
    print(f"{args.rows:,} rows x 20 columns ({array_bytes / 2**20:.0f} MiB as float32)")
    print(
        f"  load + first epoch (its validation included): sweeplab {ours['seconds']:.1f} s, pandas.read_csv + hand loop "
        f"{hand['seconds']:.1f} s: {ours['seconds'] / hand['seconds']:.2f}x (target <= 1.3); sweeplab's whole run {ours['whole']:.1f} s"
    )
    for name, r in (("sweeplab", ours), ("baseline", hand)):
        added = (r["peak"] - r["base"]) / array_bytes
        print(
            f"  peak memory over imports, {name}: {(r['peak'] - r['base']) / 2**20:.0f} MiB = {added:.1f}x the float32 array (target <= 3x for sweeplab)"
        )


if __name__ == "__main__":
    main()

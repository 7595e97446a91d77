"""Costs as the store grows: an MLflow SQLite store holding 10,000 runs.

The runs are created with the client (not trained): 1,000 in experiment
``scale`` and 9,000 in ``other``, each with the tags, params and metrics a
sweeplab run has. Then, timed:

- the start-up lookups of a run in ``scale``: skip-finished (a FINISHED run
  with this config hash?) and ``resume=auto`` (an unfinished one?), target
  <= 0.2 s each;
- ``sweeplab compare --experiment scale`` over its 1,000 runs, as a user
  types it (a fresh process), target <= 5 s.

    python benchmarks/store_scale.py [--runs 10000] [--keep /tmp/scale]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from sweeplab.config import compose
from sweeplab.record import tracking


def fill(uri: str, total: int, in_scale: int) -> None:
    client = MlflowClient(uri)
    ids = {name: client.create_experiment(name) for name in ("scale", "other")}
    start = time.perf_counter()
    for i in range(total):
        experiment = ids["scale"] if i < in_scale else ids["other"]
        run = client.create_run(experiment, run_name=f"optimizer.lr={i}")
        now = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(f"{s}/{m}", (i % 97) / 97, now, 0) for s in ("val", "test") for m in ("accuracy", "f1", "loss")],
            params=[Param("optimizer.lr", str(i)), Param("seed", str(i % 5)), Param("data.batch_size", "64")],
            tags=[RunTag("sweeplab.config_hash", f"{i:016x}"), RunTag("sweeplab.overrides", f"optimizer.lr={i} seed={i % 5}")],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} runs ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--keep", default=None, help="a folder to keep the store in (and reuse on the next call)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="sweeplab-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    if not db.exists():
        print(f"creating {args.runs} runs in {db} ...")
        fill(uri, args.runs, min(1000, args.runs))
    cfg = compose([f"paths.outputs={folder}", "experiment_name=scale", "resume=auto"], run_dir=folder / "run")
    tracking.find_finished(cfg)  # the first query opens the store: its schema check is a once-per-process cost
    for label, lookup in (("skip-finished lookup", tracking.find_finished), ("resume=auto lookup", tracking.find_resumable)):
        start = time.perf_counter()
        for _ in range(5):
            lookup(cfg)
        print(f"{label}: {(time.perf_counter() - start) / 5 * 1000:.0f} ms (target <= 200 ms)")
    exe = Path(sys.executable).with_name("sweeplab")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    subprocess.run(
        [str(exe), "compare", "--store", uri, "--experiment", "scale", "--metric", "test/f1", "--out", str(folder / "compare")],
        check=True,
        capture_output=True,
        env=env,
    )
    print(f"sweeplab compare over 1,000 runs (a fresh process): {time.perf_counter() - start:.1f} s (target <= 5 s)")


if __name__ == "__main__":
    main()

"""Which process owns a run: host and pid tags, stale RUNNING runs, a lock on the run folder.

A run records where it trains (``sweeplab.host``, ``sweeplab.pid``,
``sweeplab.process_start``). A RUNNING run whose process is gone (killed
with SIGKILL, the machine rebooted) is stale: the next run of the same config
marks it KILLED with the reason, and ``sweeplab runs --stale --close`` does so
for any. A run folder is locked while a process trains into it, so two
``resume=auto`` cannot train into the same run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

_held: dict[str, Any] = {}  # run folder -> open lock file, held until release()


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None when it does not exist (or is a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def process_tags() -> dict[str, str]:
    pid = os.getpid()
    return {"sweeplab.host": socket.gethostname(), "sweeplab.pid": str(pid), "sweeplab.process_start": _process_start(pid) or ""}


def process_gone(tags: dict[str, str]) -> bool | None:
    """True when the process that tagged a run has ended; None when that cannot be known here (another host, no tags)."""
    host, pid = tags.get("sweeplab.host"), tags.get("sweeplab.pid", "")
    if not pid.isdigit() or host != socket.gethostname():
        return None
    if Path("/proc/self/stat").exists():  # Linux: the start time tells a reused pid from the original
        start = _process_start(int(pid))
        return start is None or start != tags.get("sweeplab.process_start", start)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def has_checkpoint(tags: dict[str, str]) -> bool:
    run_dir = tags.get("sweeplab.run_dir")
    return bool(run_dir) and any((Path(run_dir) / "checkpoints" / n).exists() for n in ("last.ckpt", "interrupted.ckpt"))


def close_stale(client: Any, runs: list[Any], why: str | None = None) -> list[Any]:
    """Mark KILLED each RUNNING run whose process is gone, tagging why; return those closed."""
    closed = []
    for run in runs:
        tags = run.data.tags
        if run.info.status != "RUNNING" or not process_gone(tags):
            continue
        where = f"process {tags.get('sweeplab.pid')} on {tags.get('sweeplab.host')}"
        reason = (
            f"{where} ended without closing the run ({why or 'killed or crashed'}); resume=auto continues it from its checkpoint"
            if has_checkpoint(tags)
            else f"{where} ended before its first checkpoint ({why or 'killed or crashed'}); it cannot be resumed"
        )
        client.set_tag(run.info.run_id, "sweeplab.error", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run)
    return closed


def claim(run_dir: Path, run_id: str | None = None) -> None:
    """Lock ``run_dir`` for this process, or say in one line who holds it."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): nothing to enforce
        return
    if str(run_dir) in _held:
        return
    if any(os.environ.get(name, "0") not in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")):
        return  # a DDP process other than rank 0 (or a SLURM task other than the first) trains into rank 0's folder, under its lock
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".sweeplab.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        what = f"run {run_id}" if run_id else f"run folder {run_dir}"
        raise ValueError(f"{what} is being trained by {holder}; wait for it to end, or stop it, before resuming") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}")
    handle.flush()
    _held[str(run_dir)] = handle


def release(run_dir: Path) -> None:
    handle = _held.pop(str(run_dir), None)
    if handle is not None:
        handle.close()  # closing drops the lock


def list_running(store: str, experiment: str | None, close: bool) -> list[dict[str, str]]:
    """RUNNING runs of ``experiment`` (all experiments when None) with whether their
    process is alive; with ``close``, those whose process is gone are marked KILLED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    if experiment is None:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = ", ".join(e.name for e in client.search_experiments())
            raise ValueError(f"--experiment {experiment}: no such experiment in this store; it has {names or 'none'}")
        ids = [found.experiment_id]
    runs = client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=5000) if ids else []
    closed = {r.info.run_id for r in close_stale(client, runs)} if close else set()
    rows = []
    for run in runs:
        gone = process_gone(run.data.tags)
        state = "gone" if gone else "alive" if gone is False else "unknown (no process tags, or another host)"
        rows.append(
            {
                "run_id": run.info.run_id,
                "name": run.data.tags.get("mlflow.runName", ""),
                "process": f"{run.data.tags.get('sweeplab.pid', '?')} on {run.data.tags.get('sweeplab.host', '?')}",
                "state": state,
                "now": "KILLED" if run.info.run_id in closed else "RUNNING",
            }
        )
    return rows

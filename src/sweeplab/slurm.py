"""Sweeps on a SLURM cluster through Hydra's submitit launcher, as the process
that submitted them sees it.

- **Job states without accounting.** submitit asks ``sacct`` for the state of
  its jobs; on a cluster without accounting (no ``slurmdbd``: the usual small
  cluster) every poll fails and logs three identical warnings for the whole
  sweep. When ``sacct`` cannot answer, the states come from ``squeue --states=all``
  (which keeps a finished job for ``MinJobAge``, 300 s by default) and the
  console says so once. A real ``sacct`` error on a cluster with accounting is
  left to submitit.
- **A cancelled job ends itself, not the sweep.** A job stopped by ``scancel``,
  a time limit or a node failure leaves no result; submitit raises for it, which
  would end the whole sweep and lose the other jobs' results. It is said in one
  line, the sweep goes on, its summary lists the job as one that left no record,
  and its MLflow run is KILLED by the job's own SIGTERM handler (``resume=auto``
  continues it).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

_patched = False
SQUEUE_POLL_S = 15


def is_slurm_launcher(launcher: Any) -> bool:
    return "SlurmLauncher" in str((launcher or {}).get("_target_", ""))


def accounting_error() -> str | None:
    """Why ``sacct`` cannot report job states here, or None when it can."""
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    message = (done.stderr or done.stdout).strip().splitlines()
    return None if done.returncode == 0 else (message[0] if message else f"exit status {done.returncode}")


def _squeue_command(watcher: Any) -> list[str] | None:
    """submitit's sacct query, answered by squeue in the same format (JobID|State|NodeList)."""
    to_check = sorted({x.split("_")[0] for x in watcher._registered - watcher._finished})
    if not to_check:
        return None
    query = f"squeue --noheader --states=all --format='%i|%T|%N' --jobs={','.join(to_check)}"
    return ["sh", "-c", f"echo 'JobID|State|NodeList'; {query}"]


def _results_or_failed(original: Any) -> Any:
    def results(job: Any) -> list[Any]:
        from submitit.core.utils import UncompletedJobError

        try:
            return original(job)
        except UncompletedJobError as exc:
            from hydra.core.utils import JobReturn, JobStatus

            state = job.state
            print(f"sweeplab-train: SLURM job {job.job_id} ended {state} without a result: {str(exc).splitlines()[0]}", file=sys.stderr)
            # Not JobStatus.FAILED: Hydra's basic sweeper raises the first failed job's error and
            # ends the sweep there. No value: the optuna sweeper counts the trial failed.
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]  # Hydra's launcher reads the first task's

    return results


def prepare_parent(launcher: Any) -> None:
    """In the process that submits a sweep to SLURM: job states from squeue when
    there is no accounting, and cancelled jobs reported instead of raised."""
    global _patched
    if _patched or not is_slurm_launcher(launcher):
        return
    from submitit.core import core
    from submitit.slurm import slurm

    core.Job.results = _results_or_failed(core.Job.results)
    why = accounting_error()
    if why is not None:
        slurm.SlurmInfoWatcher._make_command = _squeue_command
        # sacct is slow on a big cluster, so submitit polls it at most every 10 minutes; squeue
        # is cheap: a job cancelled or out of time is noticed within SQUEUE_POLL_S.
        slurm.SlurmJob.watcher._delay_s = SQUEUE_POLL_S
        print(f"sweeplab-train: SLURM accounting is off here (sacct: {why}); job states come from squeue", flush=True)
    _patched = True

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
- **A job that can never start is cancelled, saying why.** A job asking more
  than its partition has (``tasks_per_node`` above a node's CPUs, say) waits in
  the queue for ``PartitionConfig`` forever unless the cluster enforces its
  limits at submission. It is cancelled with one line naming the job, the reason
  and what it asked, and the sweep goes on as for any cancelled job.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

_patched = False
SQUEUE_POLL_S = 15
# Reasons a pending job keeps until an administrator changes the partition.
NEVER_STARTS = frozenset({"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints"})
_cancelled_pending: set[str] = set()  # jobs cancelled here before they started
never_started: dict[int, str] = {}  # Hydra job number -> its overrides, for the sweep's summary
_said: set[str] = set()


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


def _largest_node_cpus(partition: str) -> str:
    shown = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%c"], capture_output=True, text=True, timeout=30)
    counts = [int(c.rstrip("+")) for c in shown.stdout.split() if c.rstrip("+").isdigit()]
    return str(max(counts)) if counts else "?"


def cancel_jobs_that_cannot_start(job_ids: set[str]) -> list[str]:
    """Cancel the pending jobs among ``job_ids`` whose reason never clears by itself; says each in one line."""
    ids = sorted({j.split("_")[0] for j in job_ids})
    if not ids:
        return []
    try:
        queue = subprocess.run(
            ["squeue", "--noheader", "--states=PENDING", "--format=%A|%r|%C|%D|%P", f"--jobs={','.join(ids)}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    cancelled = []
    for line in queue.stdout.splitlines():
        job, reason, cpus, nodes, partition = (line.split("|") + [""] * 5)[:5]
        if reason not in NEVER_STARTS or job in cancelled:
            continue
        subprocess.run(["scancel", job], capture_output=True, timeout=30)
        _cancelled_pending.add(job)
        print(
            f"sweeplab-train: SLURM job {job} cannot start in partition {partition} ({reason}: it asks {cpus} CPUs "
            f"on {nodes} node(s), the largest node there has {_largest_node_cpus(partition)}); cancelled it",
            file=sys.stderr,
            flush=True,
        )
        cancelled.append(job)
    return cancelled


def _wait_unless_it_cannot_start(job: Any) -> None:
    """submitit's wait (result file or job state, every second), looking for jobs that can never start."""
    checked, first = 0.0, True
    while not job.done():
        if time.monotonic() - checked > (2 if first else SQUEUE_POLL_S):
            if cancel_jobs_that_cannot_start(job.watcher._registered - job.watcher._finished):
                job.watcher.update()
                if str(job.job_id).split("_")[0] in _cancelled_pending:  # it never ran: no result file to wait 15 s for
                    for each in [job, *job._sub_jobs]:
                        each._results_timeout_s = 0
            checked, first = time.monotonic(), False
        time.sleep(1)


def _results_or_failed(original: Any) -> Any:
    def results(job: Any) -> list[Any]:
        from submitit.core.utils import UncompletedJobError

        never_ran = str(job.job_id).split("_")[0] in _cancelled_pending
        if never_ran:
            # submitit waits 15 s a task for a result file a slow file system may still show; this job never ran.
            for each in [job, *job._sub_jobs]:
                each._results_timeout_s = 0
        try:
            return original(job)
        except UncompletedJobError as exc:
            from hydra.core.utils import JobReturn, JobStatus

            # Cancelled during the wait above, which runs inside original(): look again.
            if never_ran or str(job.job_id).split("_")[0] in _cancelled_pending:
                overrides, _, num = job.submission().args[:3]
                never_started[int(num)] = " ".join(overrides)
            if job.job_id not in _said:  # once for a job of several tasks
                _said.add(job.job_id)
                state = job.state
                print(f"sweeplab-train: SLURM job {job.job_id} ended {state} without a result: {str(exc).splitlines()[0]}", file=sys.stderr)
            # Not JobStatus.FAILED: Hydra's basic sweeper raises the first failed job's error and
            # ends the sweep there. No value: the optuna sweeper counts the trial failed.
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]  # Hydra's launcher reads the first task's

    return results


def prepare_parent(launcher: Any) -> None:
    """In the process that submits a sweep to SLURM: job states from squeue when
    there is no accounting, cancelled jobs reported instead of raised, jobs that
    can never start cancelled."""
    global _patched
    if _patched or not is_slurm_launcher(launcher):
        return
    from submitit.core import core
    from submitit.slurm import slurm

    core.Job.results = _results_or_failed(core.Job.results)
    slurm.SlurmJob.wait = _wait_unless_it_cannot_start
    why = accounting_error()
    if why is not None:
        slurm.SlurmInfoWatcher._make_command = _squeue_command
        # sacct is slow on a big cluster, so submitit polls it at most every 10 minutes; squeue
        # is cheap: a job cancelled or out of time is noticed within SQUEUE_POLL_S.
        slurm.SlurmJob.watcher._delay_s = SQUEUE_POLL_S
        print(f"sweeplab-train: SLURM accounting is off here (sacct: {why}); job states come from squeue", flush=True)
    _patched = True

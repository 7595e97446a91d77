"""Worker processes of ``hydra/launcher=fused`` with ``hydra.launcher.n_jobs`` above 1.

The launcher composes and plans the whole batch, then shares its units (a group, or a job
that runs alone) among ``n_jobs`` processes, the larger units first, each to the process
with the fewest jobs so far. Each process runs its units in turn exactly as the launcher
runs them in its own process (``FusedLauncher.run_units``), so a sweep of several groups
trains them side by side on several cores.

A worker is ``python -m hydra_plugins.sweeplab_fused.worker``, started when the launcher is
set up (before the sweeper composes the batch, so that its imports overlap that work). It
reads its work (cloudpickled, as Hydra's joblib launcher ships jobs) from its stdin and
writes what its jobs returned to a file in a folder only this user can read (the configs
may hold a store's password). Workers run in a session of their own: Ctrl-C reaches the launcher
alone, which passes it (or SIGTERM) on to each worker once, and waits while they end
their runs KILLED with their checkpoints. A worker whose launcher dies (SIGKILL) stops
as on SIGTERM (``sweeplab.sweeps.callback.watch_sweep_parent``).

Hydra imports every module under ``hydra_plugins`` when it starts: nothing heavy at the top.
"""

import atexit
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def _shares(units: list[Any], n: int) -> list[list[Any]]:
    """``units`` in ``n`` shares of about as many jobs each, every share in the sweep's order."""
    shares: list[list[Any]] = [[] for _ in range(n)]
    for unit in sorted(units, key=lambda u: -len(u.jobs)):
        min(shares, key=lambda share: sum(len(u.jobs) for u in share)).append(unit)
    order = {id(unit): k for k, unit in enumerate(units)}
    return [sorted(share, key=lambda u: order[id(u)]) for share in shares if share]


def _signum(exc: BaseException) -> int:
    return int(getattr(exc, "signum", signal.SIGINT))


def start(n: int, n_jobs: int) -> list[subprocess.Popen]:
    """``n`` worker processes of ``n_jobs``, importing what a job needs meanwhile."""
    from sweeplab.sweeps.fused import WORKERS_ENV

    env = dict(os.environ)
    # Each worker's torch gets its share of the cores, as joblib's workers do, unless the user chose.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_jobs)))
    env[WORKERS_ENV] = str(n_jobs)  # what each job's record says of the processes sharing the cores
    command = [sys.executable, "-m", "hydra_plugins.sweeplab_fused.worker"]
    processes = [subprocess.Popen(command, stdin=subprocess.PIPE, env=env, start_new_session=True) for _ in range(n)]
    atexit.register(_stop_unused, processes)  # a sweep that ends before its launch (Ctrl-C, a bad override)
    return processes


def _stop_unused(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.stdin is not None and not process.stdin.closed:
            stop(process)


def run_in_workers(
    launcher: Any, units: list[Any], first: int, returns: dict[int, Any], started: list[subprocess.Popen]
) -> BaseException | None:
    """Run ``units`` in ``launcher.n_jobs`` worker processes (those ``started`` first) into
    ``returns``; return the interrupt that ended the sweep, or what went wrong in a worker."""
    import pickle
    import tempfile

    import cloudpickle
    from hydra.core.singleton import Singleton

    shares = _shares(units, launcher.n_jobs)
    work = {"config": launcher.config, "hydra_context": launcher.hydra_context, "task_function": launcher.task_function}
    work.update(max_group=launcher.max_group, n_jobs=launcher.n_jobs, memory=launcher.memory, first=first, singletons=Singleton.get_state())
    stop: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="sweeplab-fused-") as folder:  # mode 0700
        workers: list[tuple[subprocess.Popen, Path]] = []
        try:
            processes = started[: len(shares)] + start(len(shares) - len(started), launcher.n_jobs)
            for k, (process, share) in enumerate(zip(processes, shares)):
                result = Path(folder) / f"worker-{k}.pkl"
                workers.append((process, result))
                runs = ", ".join(u.name if u.name else f"job {first + u.jobs[0][0]}" for u in share)
                print(f"sweeplab fused: worker {k + 1} (pid {process.pid}): {runs}", flush=True)
                send(process, pickle.dumps((str(result), cloudpickle.dumps({**work, "units": share}))))
        except KeyboardInterrupt as exc:
            stop = exc
            for process, _ in workers:
                process.send_signal(_signum(exc))
        for process, _ in workers:
            while process.returncode is None:
                try:
                    process.wait()
                except KeyboardInterrupt as exc:  # passed on once to each worker still running
                    stop = stop or exc
                    for other, _ in workers:
                        if other.poll() is None:
                            other.send_signal(_signum(exc))
        failed = None
        for process, result in workers:
            if not result.is_file():
                failed = failed or RuntimeError(
                    f"a fused sweep's worker process (pid {process.pid}) ended with exit code {process.returncode} before it reported its jobs"
                )
                continue
            done, pending = cloudpickle.loads(result.read_bytes())
            returns.update(done)
            failed = failed or pending
    if failed is not None and stop is None and not isinstance(failed, KeyboardInterrupt):
        from sweeplab.sweeps.callback import close_left_running

        close_left_running("its fused sweep's worker process died")  # it died (killed, out of memory)
    return stop or failed


def stop(process: subprocess.Popen) -> None:
    """A worker started for work the batch does not have: it has run nothing yet."""
    process.kill()
    send(process, b"")
    process.wait()


def send(process: subprocess.Popen, work: bytes) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(work)
        process.stdin.close()
    except BrokenPipeError:  # it died while starting: the launcher says so once it is waited for
        pass


def main() -> None:
    try:
        try:  # what every job needs, while the launcher is still composing the sweep
            import lightning.pytorch  # noqa: F401
            import mlflow  # noqa: F401

            import sweeplab.train  # noqa: F401
        except Exception:  # noqa: BLE001 - the job that needs it says what is wrong
            pass
        sent = sys.stdin.buffer.read()
    except KeyboardInterrupt:  # the sweep was interrupted before this worker started a job: nothing to close
        sys.exit(128 + signal.SIGINT)
    if not sent:  # not needed: the batch had fewer units, or the sweep ended before it launched
        return
    import pickle

    from sweeplab import signals

    where, work_bytes = pickle.loads(sent)  # plain strings and bytes
    result = Path(where)
    signals.take_over()  # as the console script: a signal ends this worker's runs KILLED
    returns: dict[int, Any] = {}
    pending: BaseException | None = None
    try:
        import cloudpickle
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals

        from hydra_plugins.sweeplab_fused.fused_launcher import FusedLauncher

        work = cloudpickle.loads(work_bytes)
        setup_globals()
        Singleton.set_state(work["singletons"])
        launcher = FusedLauncher(max_group=work["max_group"], n_jobs=work["n_jobs"], memory=work["memory"])
        launcher.config, launcher.hydra_context, launcher.task_function = work["config"], work["hydra_context"], work["task_function"]
        configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
        pending = launcher.run_units(work["units"], work["first"], returns)
    except KeyboardInterrupt as exc:  # before its first job started, or between two
        pending = exc
    except Exception as exc:  # noqa: BLE001 - the launcher raises it, named
        pending = exc
    for signum in signals.SIGNALS:  # the runs are closed: a late signal must not lose what they returned
        signal.signal(signum, signal.SIG_IGN)
    import cloudpickle

    try:
        payload = cloudpickle.dumps((returns, pending))
    except Exception as exc:  # noqa: BLE001 - an exception that does not pickle: its line does
        from sweeplab.errors import one_line

        payload = cloudpickle.dumps((returns, RuntimeError(one_line(pending) if pending is not None else str(exc))))
    result.write_bytes(payload)
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()

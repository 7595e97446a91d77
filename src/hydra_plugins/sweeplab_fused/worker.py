"""Worker processes of ``hydra/launcher=fused`` with ``hydra.launcher.n_jobs`` above 1.

The launcher composes and plans the whole batch, then shares its units (a group, or a job
that runs alone) among ``n_jobs`` processes, the larger units first, each to the process
with the fewest jobs so far. Each process runs its units in turn exactly as the launcher
runs them in its own process (``FusedLauncher.run_units``), so a sweep of several groups
trains them side by side on several cores.

The workers are forked from one process, the zygote (``python -m
hydra_plugins.sweeplab_fused.worker``), started as the multirun starts (the Hydra callback
``fused_launcher.StartWorkersEarly``) or else when the launcher is set up. The zygote
imports what a job needs once (torch, Lightning, MLflow and its SQL store,
scikit-learn, matplotlib: about 5 s of CPU) while the sweeper composes the batch, then
forks one worker a share: every worker starts with those modules loaded, their memory is
shared between the workers until one writes to it, and a sweep of many batches (Optuna)
pays the imports once, not once a worker and batch. The zygote reads its requests (the
work cloudpickled, as Hydra's joblib launcher ships jobs) from its stdin, says which
workers it started and how each ended on a pipe of its own, and each worker writes what
its jobs returned to a file in a folder only this user can read (the configs may hold a
store's password).

The zygote and its workers run in a session of their own: Ctrl-C reaches the launcher
alone, which passes it (or SIGTERM) on to each worker once, and waits while they end
their runs KILLED with their checkpoints. If the launcher dies (SIGKILL), the zygote
closes the sweep's run and passes SIGTERM to its workers, which end their runs alike.

Hydra imports every module under ``hydra_plugins`` when it starts: nothing heavy at the top.
"""

import atexit
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("!Q")  # a request's length in bytes, before it
# Forking once torch, matplotlib and the like are imported is how Linux starts workers at once.
# Elsewhere (macOS: system libraries may hold threads a fork cannot copy; Windows: no fork) each
# worker is a fresh process that imports for itself, as this variable set to 1 asks anywhere.
SPAWN_ENV = "SWEEPLAB_FUSED_SPAWN"
MODULE = "hydra_plugins.sweeplab_fused.worker"  # this module's name, also where it runs as __main__
# What a job imports, loaded by the zygote before it forks; one that fails to import is left to
# the job that needs it to report.
JOB_IMPORTS = (
    "lightning.pytorch",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "sklearn.datasets",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sweeplab.train",
    "sweeplab.families.torch.family",
    "sweeplab.families.torch.fused",
    "sweeplab.reports.files",
    "cloudpickle",
    "hydra_plugins.sweeplab_fused.fused_launcher",
)


def _import_what_jobs_need() -> None:
    import importlib

    for name in JOB_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the job that needs it says what is wrong
            pass
    try:  # as a job loads them: pyplot drawing to files, mlflow.pytorch without the separate pytorch_lightning
        from sweeplab.record.model import mlflow_pytorch
        from sweeplab.reports.files import pyplot

        pyplot()
        mlflow_pytorch()
    except Exception:  # noqa: BLE001 - likewise
        pass


def _shares(units: list[Any], n: int) -> list[list[Any]]:
    """``units`` in ``n`` shares of about as many jobs each, every share in the sweep's order."""
    shares: list[list[Any]] = [[] for _ in range(n)]
    for unit in sorted(units, key=lambda u: -len(u.jobs)):
        min(shares, key=lambda share: sum(len(u.jobs) for u in share)).append(unit)
    order = {id(unit): k for k, unit in enumerate(units)}
    return [sorted(share, key=lambda u: order[id(u)]) for share in shares if share]


def _signum(exc: BaseException) -> int:
    return int(getattr(exc, "signum", signal.SIGINT))


def _threads(n_jobs: int) -> str:
    """Each worker's torch threads, as joblib's workers get theirs: its share of the cores."""
    return str(max(1, (os.cpu_count() or 1) // n_jobs))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except ProcessLookupError:
        return True
    except OSError:  # no /proc: it exists
        return False


class Worker:
    """A worker process forked by the zygote, waited for as a ``subprocess.Popen`` is."""

    def __init__(self, zygote: "Zygote", pid: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.returncode: int | str | None = None

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:  # ended, its end not read yet
                pass

    def poll(self) -> int | str | None:
        if self.returncode is None:
            self.zygote.read_reports(block=False)
        return self.returncode

    def wait(self) -> int | str:
        while self.returncode is None:
            self.zygote.read_reports(block=True)
        return self.returncode


class Zygote:
    """The process the workers are forked from (see the module's docstring)."""

    def __init__(self, n_jobs: int) -> None:
        from sweeplab.sweeps.fused import WORKERS_ENV

        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", _threads(n_jobs))  # for what it loads; each worker sets its own
        env.pop(WORKERS_ENV, None)
        self.env = env
        reports, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(write_end)],
            stdin=subprocess.PIPE,
            env=env,
            pass_fds=(write_end,),
            start_new_session=True,
        )
        os.close(write_end)
        self._reports, self._buffer = reports, b""
        self.workers: dict[int, Worker] = {}
        atexit.register(lambda: self.close(unused=not self.workers))

    def fork(self, shares: list[tuple[str, bytes]], n_jobs: int) -> tuple[list[Worker], KeyboardInterrupt | None]:
        """A worker for each ``(result file, work)``, started with the launcher's environment as it
        is now. An interrupt meanwhile is returned, not raised: the zygote starts them anyway (it
        may still be importing), and the launcher passes the signal on to them."""
        from sweeplab.sweeps.fused import WORKERS_ENV

        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", _threads(n_jobs))
        env[WORKERS_ENV] = str(n_jobs)  # what each job's record says of the processes sharing the cores
        changed = {k: v for k, v in env.items() if self.env.get(k) != v}
        removed = [k for k in self.env if k not in env]
        request = pickle.dumps((changed, removed, shares))
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(_HEADER.pack(len(request)) + request)
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: said below, once its reports end
        started: list[Worker] = []
        interrupted: KeyboardInterrupt | None = None
        while len(started) < len(shares):
            try:
                line = self._line(block=True)
            except KeyboardInterrupt as exc:
                interrupted = interrupted or exc
                continue
            if line is None:
                self.process.wait()
                raise RuntimeError(
                    f"a fused sweep's zygote process (pid {self.process.pid}) ended with exit code "
                    f"{self.process.returncode} before it started its worker processes"
                )
            word, pid = line.split()[:2]
            if word == "started":
                started.append(self.workers.setdefault(int(pid), Worker(self, int(pid))))
            else:
                self._ended(line)
        return started, interrupted

    def read_reports(self, block: bool) -> None:
        """Read what the zygote said of its workers' ends: all there is, waiting for one if ``block``."""
        line = self._line(block)
        if line is None and block:  # the zygote died (killed): its workers go on until they end, unreported
            self.process.wait()
            for worker in self.workers.values():
                if worker.returncode is None and _gone(worker.pid):
                    worker.returncode = f"unknown (its zygote process ended with exit code {self.process.returncode})"
            time.sleep(0.2)
        while line is not None:
            self._ended(line)
            line = self._line(block=False)

    def _ended(self, line: str) -> None:
        word, pid, code = line.split()
        if word == "ended" and int(pid) in self.workers:
            self.workers[int(pid)].returncode = int(code)

    def _line(self, block: bool) -> str | None:
        """The zygote's next line; None at the end of its reports, or when ``block`` is false and none is there."""
        while b"\n" not in self._buffer:
            if not block and not select.select([self._reports], [], [], 0)[0]:
                return None
            chunk = os.read(self._reports, 4096)  # an interrupt here has taken nothing from the pipe
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self, unused: bool = False) -> None:
        """No more work: the zygote ends (its workers have ended: the launcher waited for them).
        ``unused``: it has forked nothing, and may still be importing: it is stopped at once."""
        if unused:
            self.process.kill()
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._reports >= 0:
            os.close(self._reports)
            self._reports = -1


def run_in_workers(launcher: Any, units: list[Any], first: int, returns: dict[int, Any], zygote: Zygote) -> BaseException | None:
    """Run ``units`` in ``launcher.n_jobs`` worker processes forked by ``zygote`` into
    ``returns``; return the interrupt that ended the sweep, or what went wrong in a worker."""
    import tempfile

    import cloudpickle
    from hydra.core.singleton import Singleton

    shares = _shares(units, launcher.n_jobs)
    work = {"config": launcher.config, "hydra_context": launcher.hydra_context, "task_function": launcher.task_function}
    work.update(max_group=launcher.max_group, n_jobs=launcher.n_jobs, memory=launcher.memory, first=first, singletons=Singleton.get_state())
    stop: BaseException | None = None
    with tempfile.TemporaryDirectory(prefix="sweeplab-fused-") as folder:  # mode 0700
        results = [Path(folder) / f"worker-{k}.pkl" for k in range(len(shares))]
        workers: list[Worker] = []
        try:
            sent = [(str(result), cloudpickle.dumps({**work, "units": share})) for result, share in zip(results, shares)]
            workers, interrupted = zygote.fork(sent, launcher.n_jobs)
            for k, (process, share) in enumerate(zip(workers, shares)):
                runs = ", ".join(u.name if u.name else f"job {first + u.jobs[0][0]}" for u in share)
                print(f"sweeplab fused: worker {k + 1} (pid {process.pid}): {runs}", flush=True)
            if interrupted is not None:
                raise interrupted
        except KeyboardInterrupt as exc:
            stop = exc
            for process in workers:
                process.send_signal(_signum(exc))
        for process in workers:
            while process.returncode is None:
                try:
                    process.wait()
                except KeyboardInterrupt as exc:  # passed on once to each worker still running
                    stop = stop or exc
                    for other in workers:
                        if other.poll() is None:
                            other.send_signal(_signum(exc))
        failed = None
        for process, result in zip(workers, results):
            if not result.is_file():
                failed = failed or RuntimeError(
                    f"a fused sweep's worker process (pid {process.pid}) ended with exit code {process.returncode} before it reported its jobs"
                )
                continue
            done, pending = _unpickled(result.read_bytes())
            returns.update(done)
            failed = failed or pending
    if failed is not None and stop is None and not isinstance(failed, KeyboardInterrupt):
        from sweeplab.sweeps.callback import close_left_running

        close_left_running("its fused sweep's worker process died")  # it died (killed, out of memory)
    return stop or failed


def _unpickled(payload: bytes) -> Any:
    """A worker's result, read without the collector: the objects it makes set off collections
    over the launcher's heap (0.12 s for 24 jobs' returns)."""
    import gc

    import cloudpickle

    enabled = gc.isenabled()
    gc.disable()
    try:
        return cloudpickle.loads(payload)
    finally:
        if enabled:
            gc.enable()


def serve(where: str, work_bytes: bytes) -> None:
    """A worker: run its share of the batch, and write what its jobs returned to ``where``."""
    from sweeplab import signals

    result = Path(where)
    signals.take_over()  # as the console script: a signal ends this worker's runs KILLED
    returns: dict[int, Any] = {}
    pending: BaseException | None = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.SIGNALS)  # blocked by the zygote until now
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
    import gc

    import cloudpickle

    # This worker ends once its result is written: the collections its pickling set off, over the
    # heap its jobs left, made a 0.05 s pickle of 24 jobs' returns take 0.9 s.
    gc.disable()

    try:
        payload = cloudpickle.dumps((returns, pending))
    except Exception as exc:  # noqa: BLE001 - an exception that does not pickle: its line does
        from sweeplab.errors import one_line

        payload = cloudpickle.dumps((returns, RuntimeError(one_line(pending) if pending is not None else str(exc))))
    result.write_bytes(payload)


def _spawns() -> bool:
    return not sys.platform.startswith("linux") or os.environ.get(SPAWN_ENV) == "1"


_spawned: dict[int, subprocess.Popen] = {}  # workers started fresh, reaped by the zygote's own waitpid


def _spawn(where: str, work: bytes) -> int:
    """A worker as a fresh process (``_spawns``): its work on its stdin."""
    process = subprocess.Popen([sys.executable, "-m", MODULE, "--serve", where], stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(work)
    process.stdin.close()
    _spawned[process.pid] = process
    return process.pid


def _worker(where: str, work: bytes, closing: list[int] | None) -> None:
    """In a worker just forked by the zygote (or started fresh, ``closing`` None): its own
    threads, then its work."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in closing or []:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        import gc

        import torch

        try:
            torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        except ValueError:  # the user's own setting, as torch reads it
            pass
        gc.enable()
        serve(where, work)
        code = 0
    except BaseException:  # noqa: BLE001 - a worker must not return into the zygote's loop
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _read_request(buffer: bytearray) -> tuple[Any, ...] | None:
    """The launcher's next request from stdin (None: stdin ended, the launcher is done or gone)."""
    while len(buffer) < _HEADER.size or len(buffer) < _HEADER.size + _HEADER.unpack_from(buffer)[0]:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            return None
        buffer += chunk
    size = _HEADER.unpack_from(buffer)[0]
    request = pickle.loads(bytes(buffer[_HEADER.size : _HEADER.size + size]))
    del buffer[: _HEADER.size + size]
    return request


def _launcher_gone(children: set[int]) -> None:
    """The launcher died (SIGKILL) while workers ran: each worker ends its runs KILLED with their
    checkpoints, as on SIGTERM, instead of training for nobody; then the sweep's run is KILLED.
    In that order: on a loaded machine, this process opening the SQLite store while the workers
    closed their runs left them "database is locked" and their runs RUNNING."""
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 120
    while children:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.discard(pid)
        elif time.monotonic() > deadline:  # one that does not end: its run is left to close_stale_runs
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            deadline = float("inf")
        else:
            time.sleep(0.05)
    try:
        from sweeplab.sweeps.parent import close_orphaned

        close_orphaned()
    except Exception:  # noqa: BLE001 - nobody is left to tell
        pass
    os._exit(128 + signal.SIGTERM)


def zygote(report_fd: int) -> None:
    """Import what a job needs, then fork a worker for each share the launcher sends."""
    import gc

    spawning = _spawns()
    if not spawning:
        gc.disable()  # a million objects imported: no collection meanwhile (sweeplab.start_up)
        _import_what_jobs_need()
        gc.freeze()  # and none after: the workers share these pages instead of copying them
    from sweeplab import signals

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)  # a worker's end wakes the select below
    buffer = bytearray()
    while (request := _read_request(buffer)) is not None:
        changed, removed, shares = request
        for key in removed:  # the launcher's environment as it is now (the sweep's run among it), for the workers and for _launcher_gone
            os.environ.pop(key, None)
        os.environ.update(changed)
        children: set[int] = set()
        # A signal the launcher passes on to a worker waits until the worker can end its runs (serve).
        signal.pthread_sigmask(signal.SIG_BLOCK, signals.SIGNALS)
        for where, work in shares:
            pid = _spawn(where, work) if spawning else os.fork()
            if pid == 0:
                _worker(where, work, [0, report_fd, wake_read, wake_write])
            children.add(pid)
            os.write(report_fd, f"started {pid}\n".encode())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.SIGNALS)
        while children:
            readable = select.select([0, wake_read], [], [])[0]
            if wake_read in readable:
                os.read(wake_read, 4096)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                children.discard(pid)
                os.write(report_fd, f"ended {pid} {os.waitstatus_to_exitcode(status)}\n".encode())
                if pid in _spawned:
                    _spawned.pop(pid).returncode = os.waitstatus_to_exitcode(status)
            if 0 in readable and children:
                chunk = os.read(0, 1 << 20)
                if not chunk:  # the launcher is gone: nobody will read what its workers return
                    _launcher_gone(children)
                buffer += chunk
    # The launcher is done: nothing here to clean up, and the interpreter's teardown of what it
    # imported (0.4 s) would keep the launcher, which waits for this process, from exiting.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1] == "--serve":  # a worker started fresh: its work comes on stdin
        _worker(sys.argv[2], sys.stdin.buffer.read(), None)
    else:
        zygote(int(sys.argv[1]))

"""The tests' console scripts, started from a warm process.

Nine tenths of a ``sweeplab-train`` process the tests start is its imports (torch,
Lightning with every torchmetrics domain, MLflow, scikit-learn), paid again by every
test. Here one server per pytest worker imports them once, and each console script a
test starts with ``subprocess`` (``sweeplab-train``, ``sweeplab-eval``, ``sweeplab``)
is a child forked from it: a real process of its own, with the test's arguments,
folder, environment, pipes and signals, that runs the installed script's own code
and ends the way Python ends (non-daemon threads joined, atexit handlers, a signal's
exit status), in about a second instead of six to ten.

Environment variables read while the libraries are imported (``OMP_NUM_THREADS``,
``HF_HUB_OFFLINE``, ``PYTHONWARNINGS``, locales, ...) are the server's: a test that gives
them other values gets a server of its own that imported with them (one such server at a
time besides the worker's own, the last replaced by the next).

What a fork cannot give, a cold process gives:

- what a test names with the ``cold_process`` marker: tests of what a process imports,
  prints while importing, or costs at start-up;
- anything that is not one of the three console scripts (``python -c``; a shell's
  ``sweeplab`` commands are warm children through the stand-ins ``shell_env`` puts on
  its PATH), or that asks for what a plain fork would ignore (``preexec_fn``,
  ``pass_fds``, a user or group).

``SWEEPLAB_TESTS_COLD=1`` runs every test with cold processes, to compare.

The server: ``python warm_processes.py SOCKET``. It imports what a run imports, then
answers each request (arguments, folder, environment, the three standard streams as
file descriptors) with a forked child's pid, and later with its wait status.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

SCRIPTS = ("sweeplab-train", "sweeplab-eval", "sweeplab")
FOLDER_PREFIX = "sweeplab-warm-"  # each server's folder in the temporary directory: its socket, log and stand-ins
BIN = Path(sys.executable).parent
# Read while a library is imported (or by the interpreter as it starts): where the
# test's value differs from the server's, only a cold process is faithful.
IMPORT_TIME = (
    "PYTHON",
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "KMP_",
    "HF_",
    "HUGGINGFACE",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "NCCL_",
    "MPL",
    "LC_",
    "LANG",
    "TZ",
    "GIT_PYTHON",
    "MLFLOW_ENABLE_",
    "MLFLOW_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
)
# Handled by the child as a fresh interpreter would: sys.path and the standard streams.
EMULATED = ("PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
# Set by the libraries' imports in the server: set again in each child (after its own
# environment replaces the server's), the telemetry session's id made anew.
FRESH_PER_PROCESS = ("_MLFLOW_TELEMETRY_SESSION_ID",)


def _import_time_vars(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME) and k not in EMULATED}


def _comparable(env: dict[str, str], made: dict[str, str]) -> dict[str, str]:
    """The import-time variables of ``env``, less those the imports themselves set (a worker that
    imported torch has them too)."""
    return {k: v for k, v in _import_time_vars(env).items() if made.get(k) != v}


def _server_facts(path: str) -> dict:
    """What the server at ``path`` imported under: the variables its imports set, and the import-time
    variables a request must share with it."""
    facts = json.loads(Path(path + ".json").read_text())
    return {"set_by_imports": facts["set_by_imports"], "env": _comparable(facts["import_time"], facts["set_by_imports"])}


def _fits(env: dict[str, str], server: dict) -> bool:
    return _comparable(env, server["set_by_imports"]) == server["env"]


def _send_message(sock: socket.socket, payload: dict, fds: list[int] = ()) -> None:
    data = json.dumps(payload).encode()
    message = struct.pack("!I", len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [message], list(fds))
        sock.sendall(message[sent:])
    else:
        sock.sendall(message)


def _receive_message(sock: socket.socket, with_fds: int = 0) -> tuple[dict, list[int]]:
    if with_fds:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, with_fds)
    else:
        data, fds = sock.recv(1 << 20), []
    if not data:
        raise EOFError
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = sock.recv(1 << 20)
        if not more:
            raise EOFError
        data += more
    return json.loads(data[4 : 4 + struct.unpack("!I", data[:4])[0]]), list(fds)


# ---------------------------------------------------------------- the server


def serve(path: str) -> None:
    """Import what a run imports, then fork a child per request until the worker that started us ends."""
    import gc
    import selectors

    parent = os.getppid()
    env_before = dict(os.environ)
    sys_path = sys.path[1:]  # a fresh interpreter's, before any import adds to it (ours has no PYTHONPATH)
    # What the imports print is what every fresh process prints: kept, and written again by each child.
    captured = {fd: tempfile.TemporaryFile() for fd in (1, 2)}
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    for fd, file in captured.items():
        os.dup2(file.fileno(), fd)
    importlib.import_module("sweeplab")  # first, as in a console script: it turns MLflow's telemetry off before MLflow's import
    import hydra  # noqa: F401
    import lightning.pytorch  # noqa: F401
    import mlflow  # noqa: F401
    import sklearn  # noqa: F401
    import torchmetrics  # noqa: F401

    import sweeplab.cli  # noqa: F401
    import sweeplab.evaluate  # noqa: F401
    import sweeplab.train  # noqa: F401

    sys.stdout.flush()
    sys.stderr.flush()
    import_output = {}
    for fd, file in captured.items():
        os.dup2(saved[fd], fd)
        os.close(saved[fd])
        file.seek(0)
        import_output[fd] = file.read()
        file.close()
    set_by_imports = {k: v for k, v in os.environ.items() if env_before.get(k) != v}
    gc.collect()

    Path(path + ".json").write_text(json.dumps({"set_by_imports": set_by_imports, "import_time": _import_time_vars(env_before)}))
    _write_stand_ins(Path(path).parent)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # ready
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}
    while os.getppid() == parent:
        for _ in selector.select(timeout=0.02):
            conn, _ = listener.accept()
            try:
                request, fds = _receive_message(conn, with_fds=3)
            except (EOFError, OSError):
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    selector.close()
                    listener.close()
                    for other in waiting.values():
                        other.close()
                    conn.close()
                    _child(request, fds, import_output, set_by_imports, sys_path)
                finally:
                    os._exit(70)
            for fd in fds:
                os.close(fd)
            try:
                _send_message(conn, {"pid": pid})
                waiting[pid] = conn
            except OSError:
                conn.close()
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    _send_message(conn, {"status": status})
                conn.close()


def _print_traceback(script: str) -> None:
    """The traceback the interpreter prints, from the script's frame on: none of this module's or runpy's."""
    kind, value, tb = sys.exc_info()
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    sys.excepthook(kind, value.with_traceback(tb), tb)


def _child(request: dict, fds: list[int], import_output: dict, set_by_imports: dict, sys_path: list[str]) -> None:
    """Become the console script a fresh interpreter would run, and end as it would."""
    import io
    import runpy
    import uuid

    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    env = request["env"]
    os.environ.clear()
    os.environ.update(env)
    os.environ.update(set_by_imports)
    for name in FRESH_PER_PROCESS:
        if name in set_by_imports:
            os.environ[name] = uuid.uuid4().hex

    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    encoding, errors = sys.stdout.encoding, sys.stdout.errors

    def stream(fd: int, write: bool, **text) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "w" if write else "r", closefd=False)
        binary = raw if (write and unbuffered) else (io.BufferedWriter(raw) if write else io.BufferedReader(raw))
        return io.TextIOWrapper(binary, encoding=encoding, write_through=write and unbuffered, **text)

    sys.stdin = sys.__stdin__ = stream(0, False, errors=errors)
    # As the interpreter makes them: line-buffered (stdout on a terminal, stderr always) unless unbuffered.
    sys.stdout = sys.__stdout__ = stream(1, True, errors=errors, line_buffering=os.isatty(1) and not unbuffered)
    sys.stderr = sys.__stderr__ = stream(2, True, errors="backslashreplace", line_buffering=not unbuffered)
    for fd, text in import_output.items():
        if text:
            os.write(fd, text)

    script = request["script"]
    sys.argv = [request["argv0"], *request["args"]]
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [str(Path(script).parent), *extra, *sys_path]
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh process's global generator is seeded from the OS

    status, interrupted = 0, False
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            status = 0
        elif isinstance(stop.code, int):
            status = stop.code & 0xFF
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        _print_traceback(script)
        status, interrupted = 1, True
    except BaseException:  # noqa: BLE001  as the interpreter: a traceback and status 1
        _print_traceback(script)
        status = 1
    # The interpreter's own end: wait for non-daemon threads, run atexit, flush.
    with contextlib.suppress(BaseException):
        threading._shutdown()
    import atexit

    atexit._run_exitfuncs()
    for file in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            file.flush()
    if interrupted:  # an unhandled KeyboardInterrupt ends Python by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(status)


# ---------------------------------------------------------------- the client, in each pytest worker

# Servers by the import-time variables they imported under: the worker's own, and one other at a
# time (a test that runs offline, say), replaced when another is asked for.
_servers: dict[tuple, dict] = {}
_made: dict[str, str] = {}  # what the libraries' imports set, learnt from the first server
_server_lock = threading.Lock()
_cold = {"on": False}
_execute_child = subprocess.Popen._execute_child
_try_wait = subprocess.Popen._try_wait
_internal_poll = subprocess.Popen._internal_poll
_SIGNATURE = inspect.signature(_execute_child)


@contextlib.contextmanager
def cold_processes():
    """Within: every process this process starts is started the usual way."""
    before = _cold["on"]
    _cold["on"] = True
    try:
        yield
    finally:
        _cold["on"] = before


def _key(env: dict[str, str]) -> tuple:
    return tuple(sorted(_comparable(env, _made).items()))


def _server_for(env: dict[str, str]) -> dict:
    """The server for ``env``'s import-time variables (its process, socket path, folder and facts),
    started on first use; one with another environment than this worker's replaces the last such one."""
    with _server_lock:
        key = _key(env)
        server = _servers.get(key)
        if server and server["process"].poll() is None:
            return server
        own = _key(dict(os.environ))
        for other in [k for k in _servers if k not in (own, key)]:
            _stop(_servers.pop(other))
        folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)
        path = os.path.join(folder, "server")
        log = open(os.path.join(folder, "server.log"), "wb")  # noqa: SIM115  the server's own complaints, if any
        with cold_processes():
            process = subprocess.Popen(
                [sys.executable, __file__, path],
                env={k: v for k, v in env.items() if k != "PYTHONPATH"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while not os.path.exists(path):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the tests' warm process did not start: {Path(folder, 'server.log').read_text()[-2000:]}")
            time.sleep(0.05)
        facts = _server_facts(path)
        _made.update(facts["set_by_imports"])
        server = _servers[_key(env)] = {"process": process, "path": path, "folder": folder, **facts}
        return server


def _stop(server: dict) -> None:
    server["process"].kill()
    server["process"].wait()
    shutil.rmtree(server["folder"], ignore_errors=True)


def _stop_servers() -> None:
    for server in _servers.values():
        _stop(server)


def _script_of(call: inspect.BoundArguments) -> str | None:
    """The console script this call starts, when a warm child can stand in for it."""
    a = call.arguments
    if _cold["on"] or os.environ.get("SWEEPLAB_TESTS_COLD") == "1":
        return None
    if a["shell"] or a["preexec_fn"] is not None or a["pass_fds"] or a["uid"] is not None or a["gid"] is not None:
        return None
    if a["gids"] is not None or a["umask"] != -1 or a.get("process_group", -1) not in (-1, None):
        return None
    args = a["args"]
    if isinstance(args, (str, bytes, os.PathLike)) or not args:
        return None
    program = str(a["executable"] or args[0])
    env = a["env"] if a["env"] is not None else os.environ
    found = program if os.path.dirname(program) else shutil.which(program, path=env.get("PATH", os.defpath))
    if not found or os.path.basename(found) not in SCRIPTS:
        return None
    script = BIN / os.path.basename(found)
    if not script.exists() or not os.path.samefile(found, script):
        return None
    if a["cwd"] is not None and not os.path.isdir(a["cwd"]):
        return None  # the usual start raises the usual error
    return str(script)


def _warm_execute_child(self, *args) -> None:
    call = _SIGNATURE.bind(self, *args)
    script = _script_of(call)
    if script is None:
        return _execute_child(self, *args)
    a = call.arguments
    env = {os.fsdecode(k): os.fsdecode(v) for k, v in (a["env"] if a["env"] is not None else os.environ).items()}
    try:
        server = _server_for(env)
    except (OSError, RuntimeError) as exc:  # the suite is still right with cold processes, only slower
        _cold["on"] = True
        warnings.warn(f"the tests' warm process is unavailable, every console script starts cold: {exc}", stacklevel=2)
        return _execute_child(self, *args)
    if not _fits(env, server):  # a variable the imports set, given another value
        return _execute_child(self, *args)
    fds = [a["p2cread"], a["c2pwrite"], a["errwrite"]]
    listed = [os.fsdecode(x) for x in a["args"]]
    argv0 = listed[0] if os.path.dirname(listed[0]) else shutil.which(listed[0], path=env.get("PATH", os.defpath))
    cwd = os.fsdecode(a["cwd"]) if a["cwd"] is not None else os.getcwd()
    self.pid, conn = _fork_child(server["path"], script, [argv0, *listed[1:]], cwd, env, bool(a["start_new_session"]), fds)
    self._child_created = True
    self._warm = conn
    self._close_pipe_fds(a["p2cread"], a["p2cwrite"], a["c2pread"], a["c2pwrite"], a["errread"], a["errwrite"])


def _fork_child(path: str, script: str, argv: list[str], cwd: str, env: dict, new_session: bool, fds: list[int]):
    """Ask the server at ``path`` for a child; its pid, and the connection its wait status will come by."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    request = {"script": script, "argv0": argv[0], "args": argv[1:], "cwd": cwd, "env": env, "new_session": new_session}
    _send_message(conn, request, [fd if fd != -1 else i for i, fd in enumerate(fds)])
    reply, _ = _receive_message(conn)
    return reply["pid"], conn


def _warm_status(self, block: bool) -> int | None:
    """The child's wait status, once the server has reaped it; None while it runs."""
    if getattr(self, "_warm_result", None) is not None:
        return self._warm_result
    conn = self._warm
    conn.settimeout(None if block else 0.0)
    try:
        reply, _ = _receive_message(conn)
    except (TimeoutError, BlockingIOError):
        return None
    except (EOFError, OSError):  # the server is gone: the child went with it
        self._warm_result = signal.SIGKILL
    else:
        self._warm_result = reply["status"]
    conn.close()
    return self._warm_result


def _warm_try_wait(self, wait_flags):
    if getattr(self, "_warm", None) is None:
        return _try_wait(self, wait_flags)
    status = _warm_status(self, block=not wait_flags & os.WNOHANG)
    return (0, 0) if status is None else (self.pid, status)


def _warm_internal_poll(self, _deadstate=None, *args, **kwargs):
    if getattr(self, "_warm", None) is None:
        return _internal_poll(self, _deadstate, *args, **kwargs)
    if self.returncode is None and self._waitpid_lock.acquire(False):
        try:
            if self.returncode is None:
                status = _warm_status(self, block=False)
                if status is not None:
                    self._handle_exitstatus(status)
        finally:
            self._waitpid_lock.release()
    return self.returncode


# ---------------------------------------------------------------- stand-ins for a shell's commands

_STAND_IN = """#!{python}
import sys
sys.path.insert(0, {tests!r})
import warm_processes
warm_processes.stand_in({script!r}, {path!r})
"""


def _write_stand_ins(folder: Path) -> None:
    """``folder/bin``: a stand-in for each console script, for commands a shell runs (``bash -c``)."""
    (folder / "bin").mkdir()
    for name in SCRIPTS:
        stand_in = folder / "bin" / name
        text = _STAND_IN.format(
            python=sys.executable, tests=str(Path(__file__).parent), script=str(BIN / name), path=str(folder / "server")
        )
        stand_in.write_text(text)
        stand_in.chmod(0o755)


def stand_in(script: str, path: str) -> None:
    """Be ``script`` for the shell that started us: a warm child with our arguments, folder,
    environment and standard streams; the signals we get are passed on, and we end as it ends."""
    env = dict(os.environ)
    if _cold["on"] or env.get("SWEEPLAB_TESTS_COLD") == "1" or not os.path.exists(path) or not _fits(env, _server_facts(path)):
        os.execv(script, [script, *sys.argv[1:]])
    try:
        pid, conn = _fork_child(path, script, [script, *sys.argv[1:]], os.getcwd(), env, False, [0, 1, 2])
    except OSError:  # its server was replaced meanwhile
        os.execv(script, [script, *sys.argv[1:]])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda number, frame: os.kill(pid, number))
    try:
        status = _receive_message(conn)[0]["status"]
    except (EOFError, OSError):
        status = signal.SIGKILL
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    sys.exit(os.waitstatus_to_exitcode(status))


def shell_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the console scripts' stand-ins first on its PATH: the commands a shell runs
    with it (``bash -c "sweeplab compare ..."``) are warm children too."""
    if _cold["on"] or os.environ.get("SWEEPLAB_TESTS_COLD") == "1":
        return env
    folder = Path(_server_for(env)["folder"])
    return {**env, "PATH": f"{folder / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"}


def install() -> None:
    """From here on, this process starts the three console scripts from its warm server."""
    import atexit

    subprocess.Popen._execute_child = _warm_execute_child
    subprocess.Popen._try_wait = _warm_try_wait
    subprocess.Popen._internal_poll = _warm_internal_poll
    atexit.register(_stop_servers)


if __name__ == "__main__":
    serve(sys.argv[1])

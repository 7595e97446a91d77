"""The console scripts the tests start are forked from a warm process (tests/warm_processes.py).
A child must be what a fresh interpreter would be, or a test could pass where a user's process
fails: the same output, exit status, sys.path, end (threads, atexit, flushes) and signals."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import warm_processes

from conftest import FAST, NO_MODEL

HERE = Path(__file__).parent
pytestmark = pytest.mark.skipif(os.environ.get("SWEEPLAB_TESTS_COLD") == "1", reason="SWEEPLAB_TESTS_COLD=1: no warm process to compare")

# Small scripts with each way a Python process ends; each runs cold and warm, and both must agree.
ENDINGS = {
    "returns": "print('out'); import sys; print('err', file=sys.stderr)",
    "exits 3": "import sys; print('partial', end=''); sys.exit(3)",
    "exits with a message": "import sys; sys.exit('a message for stderr')",
    "raises": "def f():\n    raise ValueError('bad value')\nf()",
    "interrupted": "raise KeyboardInterrupt",
    "joins its threads, then atexit": (
        "import atexit, sys, threading, time\n"
        "atexit.register(lambda: print('atexit after', open('thread.txt').read()))\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), open('thread.txt', 'w').write('the thread'))).start()\n"
        "print('main done')"
    ),
    "its sys.path, argv, stdin and __main__": (
        "import sys, json\nprint(json.dumps([sys.path, sys.argv[1:], sys.stdin.read(), __name__, __file__ == sys.argv[0]]))"
    ),
    "its buffering": "import sys; print(sys.stdout.line_buffering, sys.stdout.write_through, sys.stderr.line_buffering)",
}


def _as_console_script(tmp_path: Path, monkeypatch, body: str) -> Path:
    """``body`` as an executable named like a console script in a bin folder of its own, which the warm
    process serves for this test."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "sweeplab"
    script.write_text(f"#!{sys.executable}\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setattr(warm_processes, "BIN", bin_dir)
    return script


def _run(args: list, cold: bool, input: str | None = None, **popen) -> tuple[subprocess.CompletedProcess, bool]:
    """The result, and whether it came from a warm child."""
    with warm_processes.cold_processes() if cold else contextlib.nullcontext():
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    out, err = process.communicate(input, timeout=300)
    return subprocess.CompletedProcess(args, process.returncode, out, err), getattr(process, "_warm", None) is not None


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "PYTHONUNBUFFERED"])
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_warm_child_ends_as_a_fresh_interpreter_does(ending: str, unbuffered: bool, tmp_path: Path, monkeypatch) -> None:
    script = _as_console_script(tmp_path, monkeypatch, ENDINGS[ending])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(PYTHONPATH=str(HERE), **({"PYTHONUNBUFFERED": "1"} if unbuffered else {}))
    results = {}
    for cold in (True, False):
        (tmp_path / "thread.txt").unlink(missing_ok=True)
        results[cold], warm = _run([str(script), "an argument"], cold, input="from stdin", cwd=tmp_path, env=env)
        assert warm is not cold
    cold, warm = results[True], results[False]
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)


def test_an_import_time_variable_gets_a_server_that_imported_with_its_value(tmp_path: Path, monkeypatch) -> None:
    """torch reads OMP_NUM_THREADS as it is imported: a child of a server that imported torch with
    another value would run on that server's thread count."""
    script = _as_console_script(tmp_path, monkeypatch, "import torch; print(torch.get_num_threads())")
    own = os.environ.get("OMP_NUM_THREADS", "1")
    for threads in (own, "2" if own == "1" else "1"):  # torch takes at most as many threads as there are cores
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        results = {cold: _run([str(script)], cold, env=env) for cold in (True, False)}
        assert [warm for _, warm in results.values()] == [False, True]
        assert results[False][0].stdout == results[True][0].stdout, threads


def _normalised(text: str) -> str:
    """What differs between two runs of one command: ids, times, folders, durations."""
    text = re.sub(r"[0-9a-f]{32}", "<id>", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}", "<when>", text)
    text = re.sub(r"\d+(\.\d+)?\s?(s|ms|it/s)\b", "<time>", text)
    return text


@pytest.mark.slow
@pytest.mark.parametrize("args", [[*FAST, *NO_MODEL], ["optimizer.lr=0"], ["--help"]], ids=["default run", "bad input", "help"])
def test_sweeplab_train_prints_the_same_warm_and_cold(args: list[str], tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    results = {}
    for cold in (True, False):
        folder = tmp_path / ("cold" if cold else "warm")
        folder.mkdir()
        results[cold], warm = _run([exe, *args, f"paths.outputs={tmp_path / 'outputs'}"], cold, cwd=folder, env=env)
        assert warm is not cold
    cold, warm = results[True], results[False]
    assert warm.returncode == cold.returncode, warm.stderr[-2000:]
    assert _normalised(warm.stdout) == _normalised(cold.stdout)
    assert _normalised(warm.stderr) == _normalised(cold.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_a_warm_child_as_it_ends_a_fresh_process(sig: signal.Signals, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(HERE), SWEEPLAB_TEST_HOLD=str(tmp_path), SWEEPLAB_TEST_HOLD_EPOCH="1")
    args = [exe, "trainer.max_epochs=3", "callbacks.progress_bar=null", "+callbacks.hold._target_=signal_callbacks.HoldAtEpoch", *NO_MODEL]
    ends = {}
    for cold in (True, False):
        with warm_processes.cold_processes() if cold else contextlib.nullcontext():
            process = subprocess.Popen(
                [*args, f"paths.outputs={tmp_path}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        assert (getattr(process, "_warm", None) is None) is cold
        deadline = time.time() + 180
        while not list(tmp_path.glob("held-*")) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(sig)
        for marker in tmp_path.glob("held-*"):
            marker.unlink()
        _, err = process.communicate(timeout=180)
        ends[cold] = (process.returncode, _normalised(err.strip().splitlines()[-1]))
    assert ends[False] == ends[True]
    assert ends[True][0] == 128 + sig, ends


def test_a_shell_command_gets_a_warm_child_through_the_stand_ins(tmp_path: Path) -> None:
    env = warm_processes.shell_env({k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    command = "command -v sweeplab-train; sweeplab-train optimizer.lr=0; echo status $?"
    cold_env = {**env, "SWEEPLAB_TESTS_COLD": "1"}
    warm = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    cold = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=cold_env, capture_output=True, text=True, timeout=120)
    assert warm.stdout.splitlines()[0].startswith(os.path.join(tempfile.gettempdir(), warm_processes.FOLDER_PREFIX)), warm.stdout
    assert warm.stdout.splitlines()[1:] == cold.stdout.splitlines()[1:] == ["status 1"]
    assert warm.stderr == cold.stderr and warm.stderr.startswith("sweeplab-train: error: optimizer.lr=0")

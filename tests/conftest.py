"""Shared fixtures: every test gets its own outputs folder and MLflow store."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import warm_processes

# Under pytest-xdist every worker is one of `cores` processes: one torch thread each (and
# for each console script a test starts, which inherits the variable), or the workers'
# thread pools oversubscribe the cores and every matrix product waits on the others.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The console scripts the tests start are forked from a process that has imported torch,
# Lightning and MLflow once (tests/warm_processes.py says what stays a cold process, and why).
warm_processes.install()

FAST = ["trainer.max_epochs=1", "callbacks=none"]
# For tests of other concerns that start a process per run (launchers, signals): the first
# model a process logs costs ~1.7 s (MLflow checks the model's pinned requirements against
# every installed package). Model logging has its own tests (test_mlflow_models, test_server).
NO_MODEL = ["logger.log_model=false"]
CHECKOUT_OUTPUTS = Path(__file__).resolve().parent.parent / "outputs"


# The longest tests (about 2 minutes each on 2 cores: every documented command run as written).
LONGEST = ("test_docs.py::test_every_documented_",)


@pytest.fixture(autouse=True)
def _cold_process_where_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("cold_process"):
        with warm_processes.cold_processes():
            yield
    else:
        yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, then the end-to-end tests, then the units: pytest-xdist hands tests out in
    this order, so the suite's last minutes are short tests spread over every worker rather than
    one long test keeping one worker busy while the others wait."""

    def rank(item: pytest.Item) -> int:
        if any(name in item.nodeid for name in LONGEST):
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: within a rank, the files' order


def _outputs_state() -> dict[str, tuple[int, int]]:
    """What a stray write into the checkout's outputs/ changes: the store's files
    and the folders new run folders appear in (a few stats, not a walk)."""
    state = {}
    for path in [CHECKOUT_OUTPUTS, *CHECKOUT_OUTPUTS.glob("mlflow.db*"), *CHECKOUT_OUTPUTS.glob("*/"), *CHECKOUT_OUTPUTS.glob("*/*/")]:
        if path.exists():
            info = path.stat()
            state[str(path)] = (info.st_mtime_ns, info.st_size if path.is_file() else 0)
    return state


@pytest.fixture(autouse=True)
def _leave_checkout_outputs_alone():
    """Tests write into tmp_path only: the user's own store and runs stay untouched."""
    before = _outputs_state()
    yield
    after = _outputs_state()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"this test wrote into the checkout's outputs/: {', '.join(changed)}"


@pytest.fixture
def store(tmp_path: Path) -> dict[str, str]:
    """Overrides that put the outputs and the SQLite store in tmp_path."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return {"outputs": str(tmp_path), "uri": uri}


@pytest.fixture(autouse=True)
def _no_ambient_tracking_server(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def store_overrides(store: dict[str, str]) -> list[str]:
    """The default store is <paths.outputs>/mlflow.db, so moving outputs moves it."""
    return [f"paths.outputs={store['outputs']}"]


def train_in_process(overrides: list[str], run_dir: Path) -> dict[str, float]:
    """Compose like the CLI does and run, in this process (fast: imports are paid once)."""
    from sweeplab.config import compose
    from sweeplab.train import run

    return run(compose(overrides, run_dir=run_dir))


def cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script the way a user does."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    exe = Path(sys.executable).with_name("sweeplab-train")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


# sweeplab-train's main in a fresh interpreter, printing at exit which of the heavy packages it imported.
_TRAIN_AND_LIST_IMPORTS = (
    "import atexit, sys\n"
    "heavy = ('lightning', 'torchmetrics', 'torchvision', 'torch')\n"
    "atexit.register(lambda: print('IMPORTED', ','.join(m for m in heavy if m in sys.modules)))\n"
    f"sys.argv[0] = {str(Path(sys.executable).with_name('sweeplab-train'))!r}\n"  # as the console script names itself
    "from sweeplab.train import main\n"
    "main()\n"
)


def train_listing_imports(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """``sweeplab-train args`` in a fresh process; which of lightning, torchmetrics, torchvision, torch it imported."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-c", _TRAIN_AND_LIST_IMPORTS, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("IMPORTED")), "IMPORTED ?")
    return result, set(filter(None, line.removeprefix("IMPORTED").strip().split(",")))


def runs_of(uri: str, experiment: str = "sweeplab", sweeps: bool = False):
    """The experiment's runs of configs; with ``sweeps``, its sweeps' own runs (the parents) instead."""
    import mlflow

    from sweeplab.record.tags import is_sweep_run

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[is_sweep_run(runs) == sweeps].reset_index(drop=True)


def sweeps_of(uri: str, experiment: str = "sweeplab"):
    """The sweeps' own runs, each checked to be the parent of every run its sweep trained."""
    parents, jobs = runs_of(uri, experiment, sweeps=True), runs_of(uri, experiment)
    for _, sweep in parents.iterrows():
        trained = jobs[jobs["tags.sweeplab.sweep_id"] == sweep["tags.sweeplab.sweep_id"]]
        assert len(trained) and (trained["tags.mlflow.parentRunId"] == sweep.run_id).all(), sweep["tags.sweeplab.sweep_id"]
    return parents


def saved_predictions(path: Path):
    """(y_true, y_pred) from a run's test_predictions.csv (a file or its run folder)."""
    import pandas as pd

    path = Path(path)
    frame = pd.read_csv(path / "test_predictions.csv" if path.is_dir() else path)
    return frame["y_true"].to_numpy(), frame["y_pred"].to_numpy()


@contextlib.contextmanager
def postgres_database() -> Iterator[tuple[str, Path]]:
    """PostgreSQL on loopback (as the unprivileged postgres user when run as root): its URL and a
    scratch folder; skips the test where PostgreSQL is not installed."""
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it where it can)")
    bindir = Path(initdb).resolve().parent
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="sweeplab-pg-", dir="/tmp"))
    data = root / "data"
    if as_postgres:
        shutil.chown(root, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "sweeplab"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    start = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "pg.log")]
    subprocess.run(
        [*start, "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True, timeout=120
    )
    try:
        yield f"postgresql://sweeplab@127.0.0.1:{port}/postgres", root
    finally:
        subprocess.run([*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)

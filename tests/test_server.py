"""Real MLflow tracking servers on loopback, written to over HTTP by sweeps:
one on SQLite, one on PostgreSQL (a team server), and the UI in a browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli, postgres_database

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 120) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def _start_mlflow(backend: str, artifacts: Path, port: int | None = None):
    port = port or _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    artifacts.parent.mkdir(parents=True, exist_ok=True)
    log = open(artifacts.parent / f"server-{port}.log", "w")  # the server writes to it until it stops
    # No job runner: its seven worker processes (GenAI scorers, unused here) slowed the start past two minutes
    # on a loaded 2-core machine, and outlived the server's SIGTERM.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    if not _wait_http(url + "/health"):
        os.killpg(proc.pid, signal.SIGKILL)
        tail = Path(log.name).read_text()[-2000:]
        pytest.fail(f"mlflow server on {backend} did not answer /health within 120 s; its log ends:\n{tail}")
    return url, proc


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the server is a process tree: stop the whole group
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        pytest.fail("mlflow server did not stop within 60 s of SIGTERM")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    url, proc = _start_mlflow(f"sqlite:///{root / 'server.db'}", root / "artifacts")
    yield url
    _stop(proc)


@pytest.fixture(scope="module")
def postgres_server():
    """PostgreSQL on loopback, and MLflow on it."""
    with postgres_database() as (database, root):
        url, proc = _start_mlflow(database, root / "artifacts")
        yield url
        _stop(proc)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _sweep_and_check(url: str, experiment: str, cwd: Path, extra: tuple[str, ...] = ()) -> tuple[list[dict], str]:
    """A 2-run sweep over HTTP, checked run by run; its runs and the UI page it printed."""
    result = cli(
        [
            "-m",
            f"logger.tracking_uri={url}",
            f"experiment_name={experiment}",
            "optimizer=adam,sgd",
            "trainer.max_epochs=1",
            "callbacks=none",
            "data=iris",
            *extra,
        ],
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"mlflow ui --backend-store-uri {url}" in result.stdout
    assert not (cwd / "outputs" / "mlflow.db").exists()  # nothing went to a local store
    experiment_id = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")["experiment"]["experiment_id"]
    # The sweep's page on the server itself: a saved view of the runs table (this sweep's runs, best first).
    page = next(line for line in result.stdout.splitlines() if line.startswith("see the sweep: open "))
    assert page.startswith(f"see the sweep: open {url}/#/experiments/{experiment_id}/runs?viewStateShareKey=sweep-")
    found = _post(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id]})["runs"]
    kinds = [{t["key"]: t["value"] for t in run["data"]["tags"]}.get("sweeplab.kind") for run in found]
    runs = [run for run, kind in zip(found, kinds) if kind != "sweep"]
    assert len(runs) == 2 and kinds.count("sweep") == 1  # the two jobs and the sweep's own run
    for run in runs:
        assert run["info"]["status"] == "FINISHED"
        assert {"test/accuracy", "test/precision", "test/recall", "test/f1", "val/loss"} <= {m["key"] for m in run["data"]["metrics"]}
        assert {t["key"]: t["value"] for t in run["data"]["tags"]}["sweeplab.sweep_id"]
    names = {f["path"] for f in _get(f"{url}/api/2.0/mlflow/artifacts/list?run_id={runs[0]['info']['run_id']}").get("files", [])}
    assert {"confusion_matrix.png", "config.yaml"} <= names
    return runs, page.removeprefix("see the sweep: open ")


def test_sweep_against_a_tracking_server_over_http_and_its_champion(server: str, tmp_path: Path) -> None:
    import mlflow
    from sklearn.datasets import load_iris

    runs, _ = _sweep_and_check(server, "team", tmp_path)
    tags = {
        t["key"]: t["value"] for t in _get(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=team")["experiment"]["tags"]
    }
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs table
    # The sweep's best model registered on the server, loaded back over HTTP.
    sweep = next(t["value"] for t in runs[0]["data"]["tags"] if t["key"] == "sweeplab.sweep_id")
    result = _tool("sweeplab", ["register", "--store", server, "--experiment", "team", "--sweep", sweep, "--model-name", "iris"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "alias champion" in result.stdout
    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model("models:/iris@champion")
    bunch = load_iris()
    predicted = model.predict(pd.DataFrame(bunch.data[:3], columns=bunch.feature_names))
    assert set(predicted["predicted_class"]) <= {"setosa", "versicolor", "virginica"}


def test_team_server_backed_by_postgresql(postgres_server: str, tmp_path: Path) -> None:
    # Overrides that make a run's name longer than the 250 characters PostgreSQL's runs.name takes:
    # the name is cut (the overrides are whole in the params and tags), the runs still start.
    runs, _ = _sweep_and_check(postgres_server, "team_pg", tmp_path, extra=(f"+note={'n' * 260}",))
    for run in runs:
        assert len(run["info"]["run_name"]) == 250 and run["info"]["run_name"].endswith("n…")
        assert {p["key"]: p["value"] for p in run["data"]["params"]}["note"] == "n" * 260  # a param is kept whole


def test_mlflow_ui_shows_the_sweep_in_a_real_browser(server: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian package chromium; .ci/run installs it where it can)")
    runs, page = _sweep_and_check(server, "browser", tmp_path)
    experiment_id = runs[0]["info"]["experiment_id"]
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1600,1000",
        "--virtual-time-budget=20000",
    ]
    shot = tmp_path / "mlflow_ui.png"
    subprocess.run([*flags, f"--screenshot={shot}", page], capture_output=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 10_000
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=180).stdout
    for run in runs:
        name = next(t["value"] for t in run["data"]["tags"] if t["key"] == "mlflow.runName")
        assert name in dom, f"run {name!r} not in the rendered experiment page"
    # The page the sweep printed shows its scores as columns, sorted by test/f1, and the swept key.
    for column in ("test/f1", "test/accuracy", "test/precision", "test/recall", "Sort: test/f1"):
        assert f">{column}<" in dom, f"{column} is not shown on the sweep's page"
    assert ">adam<" in dom and ">sgd<" in dom  # the swept optimizer, by name
    # The experiment's runs table shows the sweep as one row: its jobs are nested (collapsed) under it.
    sweep = next(t["value"] for t in runs[0]["data"]["tags"] if t["key"] == "sweeplab.sweep_id")
    dom = subprocess.run(
        [*flags, "--dump-dom", f"{server}/#/experiments/{experiment_id}/runs"], capture_output=True, text=True, timeout=180
    ).stdout
    assert f"sweep {sweep}" in dom, "the sweep's own run is not on the experiment's page"
    for run in runs:
        name = next(t["value"] for t in run["data"]["tags"] if t["key"] == "mlflow.runName")
        assert name not in dom, f"run {name!r} is not nested under its sweep"
    # The compare page of the two runs: the swept key among the parameters, no path, no interpolated copy.
    ids = urllib.parse.quote(json.dumps([r["info"]["run_id"] for r in runs]))
    compare = f"{server}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
    dom = subprocess.run([*flags, "--dump-dom", compare], capture_output=True, text=True, timeout=180).stdout
    assert "Parameters" in dom, "the compare page did not render"
    assert ">optimizer<" in dom  # what the sweep varied (optimizer=adam,sgd), by the option's name
    for hidden in ("paths.run_dir", "dirpath", "data.seed"):
        assert hidden not in dom, f"{hidden} is among the compared parameters"
    assert {t["key"]: t["value"] for t in runs[0]["data"]["tags"]}["sweeplab.swept"] == "optimizer"
    if os.environ.get("SWEEPLAB_SCREENSHOTS"):  # keep the picture for a person to look at
        kept = Path(os.environ["SWEEPLAB_SCREENSHOTS"])
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, kept / "mlflow_ui.png")


# -- the server as the one home of a run: checkpoints, models, registry --------------


def _tool(name: str, args: list[str], cwd: Path, env: dict | None = None, **popen) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update({"PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [str(Path(sys.executable).with_name(name)), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=full_env
    )


def test_resume_and_eval_by_run_id_from_other_folders_through_the_server(server: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    machine_a, machine_b, machine_c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder in (machine_a, machine_b, machine_c):
        folder.mkdir()
    # Interrupted on machine a: the checkpoint resume needs goes to the server as it stops.
    held = [f"logger.tracking_uri={server}", "experiment_name=home", "callbacks.progress_bar=null", "trainer.max_epochs=3"]
    held.append("+callbacks.hold._target_=signal_callbacks.HoldAtEpoch")
    tests = {"PYTHONPATH": str(Path(__file__).parent)}
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, **tests}
    env.update(SWEEPLAB_TEST_HOLD=str(machine_a), SWEEPLAB_TEST_HOLD_EPOCH="1")
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    proc = subprocess.Popen([exe, *held], cwd=machine_a, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while not list(machine_a.glob("held-*")) and time.time() < deadline:
        time.sleep(0.1)
    assert list(machine_a.glob("held-*")), "the run never reached epoch 1"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("home")
    (killed,) = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'KILLED'")
    run_id = killed.info.run_id
    assert "last.ckpt" in {Path(f.path).name for f in client.list_artifacts(run_id, "checkpoints")}
    shutil.rmtree(machine_a)  # only the server has the run now

    # Resumed on machine b, in the same MLflow run.
    resumed = _tool("sweeplab-train", [*held, f"resume={run_id}"], machine_b, env=tests)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "last.ckpt downloaded from the run's artifacts" in resumed.stdout
    after = client.get_run(run_id)
    assert after.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val/loss")]
    assert len(steps) == len(set(steps)) == 3  # each of the 3 epochs once
    assert str(machine_b) in after.data.tags["sweeplab.run_dir"]
    shutil.rmtree(machine_b)

    # Re-tested on machine c from the run's artifacts; its model loads over HTTP.
    evaluated = _tool("sweeplab-eval", [run_id, "--store", server], machine_c)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "downloaded from the run's artifacts" in evaluated.stdout
    metrics = client.get_run(run_id).data.metrics
    assert metrics["eval/test/accuracy"] == pytest.approx(metrics["test/accuracy"], abs=1e-6)
    mlflow.set_tracking_uri(server)
    assert mlflow.pyfunc.load_model(f"runs:/{run_id}/model").metadata.run_id == run_id


class _Relay:
    """A TCP relay to the shared server on a port of its own, which a test can cut
    (connections refused, open ones closed) and restore: the server going away and
    coming back, without starting another one."""

    def __init__(self, target: str) -> None:
        import threading

        self.target = int(target.rsplit(":", 1)[1])
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock, self.open_sockets, self.listener = threading.Lock(), [], None
        self.restore()

    def restore(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept blocked on it; close alone would not
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for sock in self.open_sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.open_sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open_sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_server_that_goes_away_mid_run_loses_nothing_and_sync_sends_it_later(server: str, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    relay = _Relay(server)
    args = [
        f"logger.tracking_uri={relay.url}",
        "experiment_name=outage",
        "trainer.max_epochs=3",
        "callbacks.progress_bar=null",
        "+callbacks.hold._target_=signal_callbacks.HoldAtEpoch",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # No retries: the first failed write is where the outage is noticed (MLflow's default retries take minutes).
    env.update(
        PYTHONPATH=str(Path(__file__).parent),
        SWEEPLAB_TEST_HOLD=str(tmp_path),
        SWEEPLAB_TEST_HOLD_EPOCH="1",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    exe = str(Path(sys.executable).with_name("sweeplab-train"))
    train = subprocess.Popen([exe, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not list(tmp_path.glob("held-*")) and time.time() < deadline:
            time.sleep(0.1)
        (marker,) = tmp_path.glob("held-*")
        relay.cut()  # the server goes away during epoch 1
        marker.unlink()
        stdout, stderr = train.communicate(timeout=300)
    finally:
        if train.poll() is None:
            train.kill()
    assert train.returncode == 0, stderr[-3000:]  # training finished locally
    (run_dir,) = [p.parent for p in tmp_path.glob("outputs/runs/*/*/unsynced.json")]
    line = next(x for x in stderr.splitlines() if "not sent to" in x)
    assert f"sweeplab sync {run_dir}" in line and "the model" in line and "status FINISHED" in line
    assert (run_dir / "checkpoints" / "best.ckpt").exists() and (run_dir / "test_predictions.csv").exists()

    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    assert run.info.status == "RUNNING"  # not FINISHED without its model
    relay.restore()  # the server is back
    synced = _tool("sweeplab", ["sync", str(run_dir)], tmp_path)
    assert synced.returncode == 0, synced.stderr[-2000:]
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert {"test/accuracy", "test/f1", "val/loss"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 3  # every epoch, those during the outage too
    assert {"config.yaml", "test_predictions.csv", "train.log"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
    assert run.data.tags["sweeplab.model"] == f"runs:/{run.info.run_id}/model"
    mlflow.set_tracking_uri(server)
    assert mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").metadata.run_id == run.info.run_id
    again = _tool("sweeplab", ["sync", str(run_dir)], tmp_path)
    assert again.returncode == 0 and "nothing to sync" in again.stdout  # already complete: nothing to do is success
    relay.cut()


def test_sync_skips_points_a_cut_off_write_already_delivered(server: str, tmp_path: Path) -> None:
    """A write whose answer was lost may have been stored: sync sends only the steps the run lacks."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("sync-twice") or client.get_experiment(client.create_experiment("sync-twice"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    client.log_batch(run_id, metrics=[Metric("val/loss", 0.9, 1, 0), Metric("train/loss", 1.0, 1, 0)])  # reached the server
    kept = [["val/loss", 0.9, 0, 1], ["train/loss", 1.0, 0, 1], ["val/loss", 0.7, 1, 2], ["train/loss", 0.8, 1, 2]]
    unsynced = {"tracking_uri": server, "run_id": run_id, "failure": "metrics: cut", "metrics": kept}
    (tmp_path / "unsynced.json").write_text(json.dumps({**unsynced, "artifacts": [], "model": None, "tags": {}, "status": "FINISHED"}))
    synced = _tool("sweeplab", ["sync", str(tmp_path)], tmp_path)
    assert synced.returncode == 0, synced.stderr[-2000:]
    assert "2 metric points (2 already on the server)" in synced.stdout
    for key, values in (("val/loss", [0.9, 0.7]), ("train/loss", [1.0, 0.8])):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == list(zip([0, 1], values)), key
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_password_in_the_tracking_uri_is_written_nowhere(tmp_path: Path) -> None:
    """Every byte a run writes, searched: the console, the run folder (but Hydra's own .hydra/,
    which keeps the command line as given), the server's store and its artifacts (config,
    log, model)."""
    root = tmp_path / "server"
    root.mkdir()
    (tmp_path / "work").mkdir()
    url, proc = _start_mlflow(f"sqlite:///{root / 'server.db'}", root / "artifacts")
    try:
        secret = "S3CRET" + "PASS"  # made at run time: a diff of this file (the run's git_diff.patch) holds no such literal
        secret_url = url.replace("http://", f"http://ana:{secret}@")
        result = cli([f"logger.tracking_uri={secret_url}", "trainer.max_epochs=1", "callbacks=none", "data=iris"], cwd=tmp_path / "work")
    finally:
        _stop(proc)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ana:***@" in result.stdout  # named, masked
    places = {"console": (result.stdout + result.stderr).encode()}
    for path in [*(tmp_path / "work").rglob("*"), *root.rglob("*")]:
        if path.is_file() and ".hydra" not in path.parts:
            places[str(path.relative_to(tmp_path))] = path.read_bytes()
    leaks = sorted(name for name, data in places.items() if secret.encode() in data)
    assert not leaks, leaks

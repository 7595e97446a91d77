"""A real MLflow tracking server on loopback, written to over HTTP by a sweep."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import cli

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGTERM)
        pytest.fail("mlflow server did not answer /health within 120 s")
    yield url
    os.killpg(proc.pid, signal.SIGTERM)  # the server is a process tree: stop the whole group
    proc.wait(timeout=60)


def _api(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_sweep_against_a_tracking_server_over_http(server: str, tmp_path: Path) -> None:
    result = cli(["-m", f"logger.tracking_uri={server}", "experiment_name=team", "optimizer=adam,sgd",
                  "trainer.max_epochs=1", "callbacks=none", "data=iris"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"mlflow ui --backend-store-uri {server}" in result.stdout
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to a local store
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/get-by-name?experiment_name=team", timeout=30) as r:
        experiment = json.load(r)["experiment"]
    runs = _api(server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["info"]["status"] == "FINISHED"
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"test/accuracy", "test/precision", "test/recall", "test/f1", "val/loss"} <= metrics
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["sweeplab.sweep_id"]
    with urllib.request.urlopen(f"{server}/api/2.0/mlflow/artifacts/list?run_id={runs[0]['info']['run_id']}", timeout=30) as r:
        names = {f["path"] for f in json.load(r).get("files", [])}
    assert {"confusion_matrix.png", "config.yaml"} <= names

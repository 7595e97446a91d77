"""Each run's model as an MLflow Model: loaded back through pyfunc and its own
flavour with the run's preprocessing and labels, served over HTTP, registered
with the alias champion; checkpoints as artifacts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import FAST, cli, runs_of, store_overrides, train_in_process


def _only_run(uri: str):
    runs = runs_of(uri)
    assert len(runs) == 1
    return runs.iloc[0]


def _probability_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("p_")]


def _digits_rows(ids: np.ndarray) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[ids].reshape(-1, 1, 8, 8).astype(np.float32)


def test_a_network_run_logs_a_model_that_predicts_its_test_report(store, tmp_path: Path, monkeypatch) -> None:
    read: list[str] = []  # Model.log would read each metric's history to link its step-0 points (none) to the model
    history = MlflowClient.get_metric_history
    monkeypatch.setattr(MlflowClient, "get_metric_history", lambda self, run_id, key: read.append(key) or history(self, run_id, key))
    train_in_process([*store_overrides(store), *FAST, "trainer.max_epochs=2"], tmp_path / "run")
    assert read == []
    run = _only_run(store["uri"])
    assert run["tags.sweeplab.model"] == f"runs:/{run.run_id}/model"
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    report = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    images = _digits_rows(report["row"].to_numpy())  # raw pixels 0-16, as a user has them
    predicted = model.predict(images)
    assert list(predicted["predicted_class"]) == list(report["predicted_class"].astype(str))
    assert _probability_columns(predicted) == [f"p_{i}" for i in range(10)]
    np.testing.assert_allclose(
        predicted[_probability_columns(report)].to_numpy(), report[_probability_columns(report)].to_numpy(), atol=1e-6
    )
    # Signature and example from the data; the pytorch flavour gives the bare network.
    inputs = model.metadata.signature.inputs.to_dict()
    assert inputs[0]["tensor-spec"] == {"dtype": "float32", "shape": (-1, 1, 8, 8)}
    assert model.metadata.saved_input_example_info["type"] == "ndarray"
    import torch

    assert isinstance(mlflow.pytorch.load_model(f"runs:/{run.run_id}/model"), torch.nn.Module)
    logged = MlflowClient(store["uri"]).search_logged_models(experiment_ids=[run.experiment_id])
    assert [m.source_run_id for m in logged] == [run.run_id]  # in the run's experiment, linked to it
    assert str(logged[0].status) == "READY" and len(logged[0].params) > 10
    stored = MlflowClient(store["uri"]).get_run(run.run_id)
    assert logged[0].params == stored.data.params  # the run's params, all of them, as Model.log gives its model
    assert [o.model_id for o in stored.outputs.model_outputs] == [logged[0].model_id]


def test_a_models_requirements_are_this_environments_versions_and_it_is_not_scanned(store, tmp_path: Path, monkeypatch) -> None:
    """The pins are read from this environment, so MLflow's check of them against it (which maps
    every installed package's files first, ~1.2 s a process) is skipped on saving and on validation."""
    from importlib.metadata import version

    from mlflow.utils import requirements_utils

    checked: list[str] = []
    monkeypatch.setattr(requirements_utils, "_check_requirement_satisfied", checked.append)
    train_in_process([*store_overrides(store), *FAST], tmp_path / "run")
    assert checked == []
    run = _only_run(store["uri"])
    pins = Path(mlflow.pyfunc.get_model_dependencies(f"runs:/{run.run_id}/model")).read_text().split()
    for name in ("sweeplab", "mlflow", "torch", "numpy", "pandas"):
        assert f"{name}=={version(name)}" in pins


def test_a_classical_model_on_a_users_csv_takes_the_raw_columns(store, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame(
        {"age": rng.integers(20, 70, n), "city": rng.choice(["oslo", "paris", "rome"], n), "income": rng.normal(50, 10, n)}
    )
    frame["buys"] = np.where(frame.income + (frame.city == "oslo") * 10 > 55, "yes", "no")
    frame.loc[[3, 17], "income"] = np.nan
    path = tmp_path / "shop.csv"
    frame.to_csv(path, index=False)
    overrides = [*store_overrides(store), "data=csv", f"data.path={path}", "data.target=buys", "data.missing=mean", "model=random_forest"]
    train_in_process(overrides, tmp_path / "run")
    run = _only_run(store["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    report = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    rows = pd.read_csv(path).drop(columns="buys").iloc[report["row"].to_numpy()]  # categorical text and gaps included
    predicted = model.predict(rows)
    assert list(predicted["predicted_class"]) == list(report["predicted_class"])
    np.testing.assert_allclose(predicted[["p_no", "p_yes"]].to_numpy(), report[["p_no", "p_yes"]].to_numpy(), atol=1e-9)
    assert [c["name"] for c in model.metadata.signature.inputs.to_dict()] == ["age", "city", "income"]
    from sklearn.ensemble import RandomForestClassifier

    assert isinstance(mlflow.sklearn.load_model(f"runs:/{run.run_id}/model"), RandomForestClassifier)
    unknown = rows.head(2).assign(city="lima")
    with pytest.raises(Exception, match="column 'city': value 'lima' was not in the training data; known: oslo, paris, rome"):
        model.predict(unknown)
    # A gap is filled as in training (data.missing=mean); a value no training row could hold is refused.
    assert len(model.predict(rows.head(3).assign(income=[1.0, np.nan, 2.0]))) == 3
    with pytest.raises(ValueError, match=r"row 1, column 'income': 1e\+308 is not a finite number the model can read"):
        model.predict(rows.head(3).assign(income=[1.0, 1e308, 2.0]))


def test_a_regression_model_answers_in_the_targets_units(store, tmp_path: Path) -> None:
    train_in_process([*store_overrides(store), *FAST, "data=diabetes", "trainer.max_epochs=3"], tmp_path / "run")
    run = _only_run(store["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    report = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    rows = pd.DataFrame(bunch.data[report["row"].to_numpy()], columns=bunch.feature_names)
    np.testing.assert_allclose(model.predict(rows)["y_pred"].to_numpy(), report["y_pred"].to_numpy(), rtol=1e-5)


def test_log_model_false_logs_none_and_runs_without_a_model_say_why(store, tmp_path: Path) -> None:
    train_in_process([*store_overrides(store), *FAST, "logger.log_model=false"], tmp_path / "a")
    train_in_process([*store_overrides(store), "model=dbscan", "data=iris"], tmp_path / "b")
    runs = runs_of(store["uri"]).set_index("tags.sweeplab.model_kind")
    assert pd.isna(runs.loc["torch", "tags.sweeplab.model"])
    assert "DBSCAN clusters each data set on its own" in runs.loc["classical", "tags.sweeplab.model"]
    assert not MlflowClient(store["uri"]).search_logged_models(experiment_ids=[runs.experiment_id.iloc[0]])


@pytest.mark.parametrize(("which", "expected"), [("best", {"best.ckpt"}), ("all", {"best.ckpt", "last.ckpt"}), ("none", set())])
def test_log_checkpoints_uploads_the_checkpoints_it_names(which: str, expected: set[str], store, tmp_path: Path) -> None:
    train_in_process(
        [*store_overrides(store), "trainer.max_epochs=2", f"logger.log_checkpoints={which}", "logger.log_model=false"], tmp_path / "r"
    )
    run = _only_run(store["uri"])
    client = MlflowClient(store["uri"])
    assert {Path(f.path).name for f in client.list_artifacts(run.run_id, "checkpoints")} == expected


def test_log_checkpoints_all_uploads_each_checkpoint_as_it_is_written(store, tmp_path: Path, monkeypatch) -> None:
    from sweeplab.record import publish

    sent: list[tuple[str, int]] = []
    artifact = publish.Outbox.artifact

    def spy(self, path, folder=None):
        if folder == "checkpoints":
            sent.append((path.name, self.client.get_run(self.run_id).info.status == "RUNNING"))
        artifact(self, path, folder)

    monkeypatch.setattr(publish.Outbox, "artifact", spy)
    train_in_process(
        [*store_overrides(store), "trainer.max_epochs=3", "logger.log_checkpoints=all", "logger.log_model=false"], tmp_path / "r"
    )
    last = [name for name, _ in sent if name == "last.ckpt"]
    assert len(last) == 3  # once per epoch, while training: the server holds the latest even if the machine dies
    assert all(running for _, running in sent)


def test_bad_log_checkpoints_is_one_line(tmp_path: Path) -> None:
    result = cli(["logger.log_checkpoints=sometimes"], cwd=tmp_path)
    assert result.returncode != 0
    assert "logger.log_checkpoints='sometimes': choose one of best, last, all, none" in result.stderr
    assert not (tmp_path / "outputs" / "mlflow.db").exists() or runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").empty


# -- the registry ------------------------------------------------------------------


def _sweeplab(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    exe = Path(sys.executable).with_name("sweeplab")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_register_makes_the_best_run_the_champion(store, tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        train_in_process([*store_overrides(store), *FAST, f"seed={seed}"], tmp_path / f"s{seed}")
    runs = runs_of(store["uri"])
    best = runs.sort_values("metrics.test/f1", ascending=False).iloc[0]
    result = _sweeplab(["register", "--store", store["uri"], "--metric", "test/f1", "--model-name", "digits"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"registered run {best.run_id}" in result.stdout and "version 1, alias champion" in result.stdout
    assert "trust: loading it unpickles the model" in result.stdout
    client = MlflowClient(store["uri"])
    version = client.get_model_version_by_alias("digits", "champion")
    assert version.tags["sweeplab.config_hash"] == best["tags.sweeplab.config_hash"]
    assert version.tags["sweeplab.metric"] == "test/f1" and float(version.tags["sweeplab.metric_value"]) == pytest.approx(
        best["metrics.test/f1"], rel=1e-5
    )
    mlflow.set_tracking_uri(store["uri"])
    champion = mlflow.pyfunc.load_model("models:/digits@champion")
    assert champion.metadata.run_id == best.run_id
    # Registering again (a later sweep) adds version 2 and moves the alias.
    again = _sweeplab(["register", "--store", store["uri"], "--metric", "test/loss", "--model-name", "digits"], tmp_path)
    assert "version 2, alias champion" in again.stdout
    lowest = runs.sort_values("metrics.test/loss").iloc[0]  # a loss: lower wins
    assert client.get_model_version_by_alias("digits", "champion").tags["sweeplab.run_id"] == lowest.run_id

    missing = _sweeplab(["register", "--store", store["uri"], "--metric", "test/auc", "--model-name", "digits"], tmp_path)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].startswith("sweeplab: error: --metric test/auc: not logged by these runs; available:")


def test_a_tie_picks_the_earliest_run_and_says_so() -> None:
    from sweeplab.serving.registry import best_run

    runs = pd.DataFrame(
        {
            "run_id": ["late", "early", "worse"],
            "status": ["FINISHED"] * 3,
            "start_time": pd.to_datetime(["2026-01-02", "2026-01-01", "2026-01-03"]),
            "metrics.test/f1": [0.9, 0.9, 0.8],
            "tags.sweeplab.model": ["runs:/late/model", "runs:/early/model", "runs:/worse/model"],
        }
    )
    run, ties = best_run(runs, "test/f1")
    assert run["run_id"] == "early" and ties == ["late"]
    no_models = runs.assign(**{"tags.sweeplab.model": None})
    with pytest.raises(ValueError, match="none of these runs logged an MLflow Model"):
        best_run(no_models, "test/f1")


# -- serving -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_runs_predictions(store, tmp_path: Path) -> None:
    train_in_process([*store_overrides(store), *FAST, "trainer.max_epochs=2"], tmp_path / "run")
    uri = store["uri"]
    run = _only_run(uri)
    report = pd.read_csv(Path(run["tags.sweeplab.run_dir"]) / "test_predictions.csv")
    port = _free_port()
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # As in an activated environment: MLflow starts uvicorn by name.
    env.update(MLFLOW_TRACKING_URI=uri, PATH=f"{mlflow_exe.parent}{os.pathsep}{env.get('PATH', '')}")
    server = subprocess.Popen(
        [
            str(mlflow_exe),
            "models",
            "serve",
            "-m",
            f"runs:/{run.run_id}/model",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail(
                        f"the model server did not answer /ping: {server.stderr.read()[-2000:] if server.poll() is not None else 'timeout'}"
                    )
                time.sleep(0.5)
        body = json.dumps({"inputs": _digits_rows(report["row"].to_numpy()).tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = pd.DataFrame(json.load(response)["predictions"])
        images = np.asarray(_digits_rows(report["row"].to_numpy()[:2]), dtype=np.float64)
        images.reshape(2, -1)[1, 5] = 1e308  # beyond float32: the model would answer from inf
        rows = images.tolist()
        bad = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps({"inputs": rows}).encode(), headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=60)
        refusal = refused.value.read().decode()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    assert list(answer["predicted_class"].astype(str)) == list(report["predicted_class"].astype(str))
    np.testing.assert_allclose(answer["p_7"].to_numpy(), report["p_7"].to_numpy(), atol=1e-6)
    assert refused.value.code == 400, refusal
    # MLflow's float32 tensor signature has made the value inf before the model sees it; refused all the same.
    assert "row 1, value 5: inf is not a finite number the model can read" in refusal, refusal


def test_a_model_another_sweeplab_version_cannot_read_names_both_versions(store, tmp_path: Path, monkeypatch) -> None:
    from sweeplab import __version__
    from sweeplab.record import model as serving

    train_in_process([*store_overrides(store), *FAST, "data=iris"], tmp_path / "run")
    run = _only_run(store["uri"])
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model", dst_path=str(tmp_path / "model")))
    spec_file = folder / serving.SPEC_FILE
    spec_file.write_text(spec_file.read_text().replace(f'"sweeplab_version": "{__version__}"', '"sweeplab_version": "0.0.1"'))

    def moved(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'sweeplab.models.old_mlp'")

    monkeypatch.setattr(mlflow.pytorch, "load_model", moved)
    with pytest.raises(RuntimeError, match=rf"logged by sweeplab 0\.0\.1 and cannot be read by sweeplab {__version__} .*sweeplab==0\.0\.1"):
        mlflow.pyfunc.load_model(str(folder))


def test_a_text_classifier_takes_raw_texts_through_the_runs_tokenizer(store, tmp_path: Path) -> None:
    import hydra

    from sweeplab.config import compose

    overrides = [*store_overrides(store), *FAST, "data=sentiment", "model=embedding_bag", "trainer.max_epochs=2"]
    train_in_process(overrides, tmp_path / "run")
    run = _only_run(store["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    report = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    datamodule = hydra.utils.instantiate(compose(overrides).data)
    datamodule.setup()
    assert list(datamodule.ids["test"]) == list(report["line"])  # the same test sentences, in the same order
    predicted = model.predict(pd.DataFrame({"text": datamodule.texts["test"]}))
    assert list(predicted["predicted_class"]) == list(report["predicted_class"])
    np.testing.assert_allclose(predicted[["p_neg", "p_pos"]].to_numpy(), report[["p_neg", "p_pos"]].to_numpy(), atol=1e-6)
    assert [c["name"] for c in model.metadata.signature.inputs.to_dict()] == ["text"]
    with pytest.raises(Exception, match=r"Model is missing inputs \['text'\]"):  # MLflow's schema check, from the signature
        model.predict(pd.DataFrame({"review": ["fine"]}))
    with pytest.raises(ValueError, match=r"row 1: an empty text; each row needs at least one word"):
        model.predict(pd.DataFrame({"text": ["fine", "  "]}))


@pytest.mark.parametrize("agent", ["q_learning", "value_iteration"])
def test_an_agents_model_is_its_greedy_policy(agent: str, store, tmp_path: Path) -> None:
    train_in_process([*store_overrides(store), "env=frozen_lake", f"agent={agent}"], tmp_path / "run")
    run = _only_run(store["uri"])
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    saved = np.load(tmp_path / "run" / "policy.npz")
    states = np.arange(16, dtype=np.float32).reshape(-1, 1)
    answer = model.predict(states)
    assert list(answer["action"]) == list(saved["policy"])
    if agent == "q_learning":  # the action values it learned come with the action
        np.testing.assert_allclose(answer[[f"q_{a}" for a in range(4)]].to_numpy(), saved["q"], rtol=1e-6)
    else:
        assert list(answer.columns) == ["action"]
    for state in (-1.0, 0.5, 16.0, 99.0):  # used to answer action 0, or a raw IndexError
        with pytest.raises(
            ValueError, match=rf"row 0: state {state:g} is not a state of this environment; give whole numbers from 0 to 15"
        ):
            model.predict(np.array([[state]], dtype=np.float32))


def test_what_a_run_keeps_for_sync_holds_no_password(tmp_path: Path, capsys) -> None:
    from sweeplab.record.publish import Outbox

    class Gone:  # a server that refuses every call
        def __getattr__(self, name):
            def refuse(*args, **kwargs):
                raise ConnectionError("connection refused")

            return refuse

    outbox = Outbox(Gone(), "0123abcd", tmp_path, "http://ana:s3cret@127.0.0.1:9")
    outbox.tag("mlflow.note.content", "test scores")
    outbox.close("FINISHED")
    kept = (tmp_path / "unsynced.json").read_text()
    assert "s3cret" not in kept and "ana:***@127.0.0.1:9" in kept and "s3cret" not in capsys.readouterr().err
    result = _sweeplab(["sync", str(tmp_path)], tmp_path)
    assert result.returncode != 0
    assert f"give it with its password: sweeplab sync {tmp_path} --store <uri>" in result.stderr


def test_validation_values_held_for_the_epoch_write_reach_the_store_when_the_run_ends_early(tmp_path: Path) -> None:
    """An interruption between an epoch's validation and training values: closing the run writes what was held."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from sweeplab.record.publish import Outbox

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("held")).info.run_id
    written: list[dict[str, float]] = []

    class Logger:  # Lightning's MLFlowLogger.log_metrics: one log_batch a call
        def log_metrics(self, metrics, step=None):
            written.append(dict(metrics))
            client.log_batch(run_id, [Metric(k, v, 0, step) for k, v in metrics.items()])

    logger = Logger()
    outbox = Outbox(client, run_id, tmp_path, uri).attach(logger)
    logger.log_metrics({"val/loss": 0.5, "epoch": 0}, step=7)
    logger.log_metrics({"train/loss": 0.6, "epoch": 0}, step=7)  # same step: one write
    logger.log_metrics({"val/loss": 0.4, "epoch": 1}, step=14)
    assert written == [{"val/loss": 0.5, "epoch": 0, "train/loss": 0.6}]
    outbox.close("KILLED")
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/loss")] == [(7, 0.5), (14, 0.4)]
    assert client.get_run(run_id).info.status == "KILLED"


def test_a_model_whose_spec_lacks_keys_a_later_version_added_still_loads(store, tmp_path: Path) -> None:
    from sweeplab.record import model as serving

    train_in_process([*store_overrides(store), *FAST, "data=iris"], tmp_path / "run")
    run = _only_run(store["uri"])
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model", dst_path=str(tmp_path / "model")))
    spec_file = folder / serving.SPEC_FILE
    older = {k: v for k, v in json.loads(spec_file.read_text()).items() if k not in ("text", "action_values")}
    spec_file.write_text(json.dumps(older))
    from sklearn.datasets import load_iris

    bunch = load_iris()
    answer = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame(bunch.data[:2], columns=bunch.feature_names))
    assert set(answer["predicted_class"]) <= {"setosa", "versicolor", "virginica"}

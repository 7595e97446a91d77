"""hydra/launcher=fused: trials that share an architecture train as one vectorised
computation, and each is still the run its solo launch would have made."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NO_MODEL, cli, runs_of, sweeps_of

pytestmark = pytest.mark.slow
FUSED = ["-m", "hydra/launcher=fused", "print_config=false"]


def _store(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"


def _histories(uri: str) -> dict[str, tuple[dict, dict[str, list[tuple[int, float]]], list[str]]]:
    """run name -> (run, {metric: [(step, value)]}, artifact paths)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    out = {}
    for run in client.search_runs(experiments):
        if run.data.tags.get("sweeplab.kind") == "sweep":  # the sweep's own run: a summary, not a trial
            continue
        history = {
            key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))]
            for key in run.data.metrics
        }
        artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        out[run.info.run_name] = (run, history, artifacts)
    return out


def _solo_then_fused(grid: list[str], tmp_path: Path) -> tuple[dict, dict, Path]:
    """The 4-job ``grid`` swept solo, then fused as one group, each in a folder of its own: the solo
    and the fused runs' histories (``_histories``), and the fused sweep's folder."""
    solo, fused = tmp_path / "solo", tmp_path / "fused"
    solo.mkdir(), fused.mkdir()
    result = cli(["-m", "print_config=false", *grid], cwd=solo)
    assert result.returncode == 0, result.stderr[-3000:]
    result = cli([*FUSED, *grid], cwd=fused)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "g1: jobs 0, 1, 2, 3 train together" in result.stdout
    assert "4 trained, 0 skipped, 0 failed" in result.stdout and "fused group g1: jobs 0, 1, 2, 3 trained together" in result.stdout
    alone, together = _histories(_store(solo)), _histories(_store(fused))
    assert sorted(alone) == sorted(together) and len(together) == 4
    return alone, together, fused


def test_fused_trials_are_their_solo_runs(tmp_path: Path) -> None:
    """Without dropout a fused trial's every logged value equals its solo run's (same steps, keys,
    params, config hash, files, model); only the group tag tells them apart. sweeplab-eval re-tests it."""
    grid = ["trainer.max_epochs=3", "model.dropout=0", "seed=1,2", "optimizer=adam,sgd"]
    alone, together, fused = _solo_then_fused(grid, tmp_path)
    assert len(sweeps_of(_store(fused))) == 1  # fused trials nest under the sweep's run like solo jobs
    worst = 0.0
    for name, (run, history, artifacts) in together.items():
        solo_run, solo_history, solo_artifacts = alone[name]
        assert run.info.status == "FINISHED"
        assert run.data.params == solo_run.data.params
        assert run.data.tags["sweeplab.config_hash"] == solo_run.data.tags["sweeplab.config_hash"]
        assert set(run.data.tags) - set(solo_run.data.tags) == {"sweeplab.fused_group"}
        assert run.data.tags["sweeplab.fused_group"].endswith("/g1")
        assert artifacts == solo_artifacts and "checkpoints" in artifacts
        assert set(history) == set(solo_history)
        for key, points in history.items():
            assert [s for s, _ in points] == [s for s, _ in solo_history[key]], key
            for (_, value), (_, solo_value) in zip(points, solo_history[key], strict=True):
                worst = max(worst, abs(value - solo_value) / max(abs(solo_value), 1e-8))
        folder = Path(run.data.tags["sweeplab.run_dir"])
        assert (folder / "checkpoints" / "best.ckpt").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
        assert (folder / "checkpoints" / ".owner").read_text().strip() == run.info.run_id
        log = (folder / "train.log").read_text()
        assert f"run: {name}" in log and log.count("run: ") == 1  # its own lines only
    assert worst < 1e-4, worst
    from mlflow.tracking import MlflowClient

    experiment = next(iter(together.values()))[0].info.experiment_id
    models = MlflowClient(_store(fused)).search_logged_models(experiment_ids=[experiment])
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r, _, _ in together.values())
    # A fused trial's best checkpoint and config re-test as any run's do.
    run_id = next(iter(together.values()))[0].info.run_id
    logged = next(iter(together.values()))[0].data.metrics["test/accuracy"]
    exe = Path(sys.executable).with_name("sweeplab-eval")
    tested = subprocess.run([str(exe), run_id, "--store", _store(fused)], cwd=fused, capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert f"{logged:.6f}" in tested.stdout


def test_bf16_mixed_trials_fuse_and_match_their_solo_runs_to_bf16_rounding(tmp_path: Path) -> None:
    """trainer.precision=bf16-mixed trials train as one group under autocast, as their solo runs do.
    Their numbers agree to bf16's rounding, not float32's: torch's vmap adds a Linear's bias in fp32
    after the bf16 matmul, where a solo run adds it in bf16 (measured: losses within 5e-3 relative)."""
    grid = ["trainer.max_epochs=3", "model.dropout=0", "seed=1,2", "optimizer=adam,sgd", "trainer.precision=bf16-mixed", *NO_MODEL]
    alone, together, _ = _solo_then_fused(grid, tmp_path)
    for name, (run, history, _) in together.items():
        assert run.info.status == "FINISHED" and run.data.tags["sweeplab.fused_group"].endswith("/g1")
        assert run.data.params["trainer.precision"] == "bf16-mixed"
        solo_history = alone[name][1]
        assert set(history) == set(solo_history)
        for key in ("train/loss", "val/loss"):
            assert [s for s, _ in history[key]] == [s for s, _ in solo_history[key]], key
            for (_, value), (_, solo_value) in zip(history[key], solo_history[key], strict=True):
                assert abs(value - solo_value) <= 2e-2 * abs(solo_value), (name, key, value, solo_value)
        assert abs(history["test/accuracy"][0][1] - solo_history["test/accuracy"][0][1]) <= 0.02, name


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run sweeplab-train with a pseudo-terminal as its standard streams, as in a shell; its exit code and output."""
    import pty

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    exe = Path(sys.executable).with_name("sweeplab-train")
    process = subprocess.Popen([str(exe), *args], cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: every process holding it has ended
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(timeout=300), output.decode(errors="replace")


def test_a_group_shows_a_progress_bar_on_a_terminal_and_none_in_a_log(tmp_path: Path) -> None:
    """On a terminal the group draws a bar over each epoch's batches (train and val) for its trials, as a
    solo run draws Lightning's; piped to a file, its epoch lines alone. callbacks=none: no bar."""
    grid = ["seed=1,2", "trainer.max_epochs=2", *NO_MODEL]
    for name in ("terminal", "piped", "quiet"):  # each its own store: a finished config would be skipped
        (tmp_path / name).mkdir()
    code, shown = _on_a_terminal([*FUSED, *grid], tmp_path / "terminal")
    assert code == 0, shown[-3000:]
    assert "g1: epoch 1/2, 2 trials" in shown and "g1: epoch 2/2, 2 trials" in shown
    assert re.search(r"25/25", shown), shown[-3000:]  # digits: 20 training and 5 validation batches
    assert "sweeplab fused: g1: epoch 2/2, 2 of 2 trials training" in shown  # the epoch lines too
    piped = cli([*FUSED, *grid], cwd=tmp_path / "piped")
    assert piped.returncode == 0 and "trials training" in piped.stdout and ", 2 trials" not in piped.stdout
    code, quiet = _on_a_terminal([*FUSED, *grid, "callbacks=none"], tmp_path / "quiet")
    assert code == 0 and "trials training" in quiet and ", 2 trials" not in quiet, quiet[-3000:]
    # Worker processes side by side share the terminal: their epoch lines, no bars.
    (tmp_path / "workers").mkdir()
    code, workers = _on_a_terminal([*FUSED, "data.batch_size=32,64", *grid, "hydra.launcher.n_jobs=2"], tmp_path / "workers")
    assert code == 0 and workers.count("of 2 trials training") == 4 and ", 2 trials" not in workers, workers[-3000:]


def test_a_nan_trial_fails_alone(tmp_path: Path) -> None:
    result = cli([*FUSED, "trainer.max_epochs=2", "optimizer=sgd", "optimizer.lr=1e30,0.01", *NO_MODEL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 trained, 0 skipped, 1 failed" in result.stdout
    runs = runs_of(_store(tmp_path)).set_index("params.optimizer.lr")
    assert runs.loc["1e+30", "status"] == "FAILED" and "loss became nan" in runs.loc["1e+30", "tags.sweeplab.error"]
    assert runs.loc["0.01", "status"] == "FINISHED" and runs.loc["0.01", "metrics.test/accuracy"] > 0.5


def test_a_group_whose_every_loss_turns_nan_fails_each_trial(tmp_path: Path) -> None:
    """Regression trials (each its own loss call, no group tally) that all diverge in their first
    epoch: each fails with its own line, and the group ends without an error of its own."""
    lrs = "optimizer.lr=1e30,1e31"
    result = cli([*FUSED, "data=diabetes", "trainer.max_epochs=2", "optimizer=sgd", lrs, *NO_MODEL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 trained, 0 skipped, 2 failed" in result.stdout and "train together" in result.stdout
    runs = runs_of(_store(tmp_path))
    assert list(runs.status) == ["FAILED", "FAILED"]
    assert all("loss became" in error for error in runs["tags.sweeplab.error"])


def test_a_group_larger_than_its_memory_trains_in_rounds_with_the_same_numbers(tmp_path: Path) -> None:
    """hydra.launcher.memory (40 MiB: two digits MLPs of about 17.6 MiB each) splits a group of 4 into
    rounds of 2: the second round's runs start once the first round's have ended, and every trial
    logs what it logs in one round of 4."""
    grid = ["trainer.max_epochs=2", "model.dropout=0", "seed=1,2,3,4", *NO_MODEL]
    whole, rounds = tmp_path / "whole", tmp_path / "rounds"
    whole.mkdir(), rounds.mkdir()
    result = cli([*FUSED, *grid], cwd=whole)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rounds" not in result.stdout and "g1: jobs 0, 1, 2, 3 train together" in result.stdout
    result = cli([*FUSED, *grid, "hydra.launcher.memory=40MiB"], cwd=rounds)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if "rounds of" in x)
    per_trial = float(line.split("about ")[1].split(" MiB")[0])
    assert 40 // per_trial == 2, line
    assert "g1: trains in 2 rounds of up to 2 jobs" in line and line.endswith("40.0 MiB allowed (hydra.launcher.memory)")
    assert "g1: jobs 0, 1 train together" in result.stdout and "g1: jobs 2, 3 train together" in result.stdout
    assert "4 trained, 0 skipped, 0 failed" in result.stdout
    assert "fused group g1: jobs 0, 1 | 2, 3 trained together in 2 rounds to fit the memory" in result.stdout
    together, apart = _histories(_store(whole)), _histories(_store(rounds))
    assert sorted(together) == sorted(apart) and len(apart) == 4
    for name, (run, history, _) in apart.items():
        assert run.info.status == "FINISHED" and run.data.tags["sweeplab.fused_group"].endswith("/g1")
        assert history == together[name][1], name
    runs = sorted((r.data.params["seed"], r.info.start_time, r.info.end_time) for r, _, _ in apart.values())
    assert max(end for _, _, end in runs[:2]) <= min(start for _, start, _ in runs[2:])


def test_a_trials_activations_are_counted_layer_by_layer_on_one_batch() -> None:
    import torch
    from torch import nn

    from sweeplab.families.torch.fused import _activations

    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    dataset = [(torch.zeros(4), 0)]
    state = torch.get_rng_state()
    assert _activations(net, dataset, batch_size=5) == 4 * 5 * (8 + 8 + 8 + 3)  # float32 outputs of each layer
    assert net.training and torch.equal(torch.get_rng_state(), state)  # its mode and the random stream as they were
    assert _activations(net, [("text", 0)], batch_size=5) == 0  # a sample that is not a tensor: left out


def test_jobs_that_cannot_fuse_run_alone_and_are_named(tmp_path: Path) -> None:
    """BatchNorm (known once built) and a scikit-learn estimator (known from the config) train as solo runs."""
    result = cli([*FUSED, "model=deep_mlp,knn", "seed=1,2", "trainer.max_epochs=1", *NO_MODEL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trained, 0 skipped, 0 failed" in result.stdout
    assert result.stdout.count("trained alone: BatchNorm1d (its running statistics do not vectorise)") == 2
    assert result.stdout.count("trained alone: a scikit-learn estimator") == 2
    runs = runs_of(_store(tmp_path))
    assert set(runs.status) == {"FINISHED"} and "tags.sweeplab.fused_group" not in runs.columns
    records = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/multirun/*/*/*/sweeplab_job.json")]
    assert sorted(r["alone"] for r in records)[0].startswith("BatchNorm1d")
    # A CNN without its BatchNorm (+model.batch_norm=false) fuses.
    cnn = cli([*FUSED, "model=cnn", "+model.batch_norm=false", "seed=1,2", "trainer.max_epochs=1", *NO_MODEL], cwd=tmp_path)
    assert cnn.returncode == 0 and "fused group g1: jobs 0, 1 trained together" in cnn.stdout, cnn.stdout[-3000:] + cnn.stderr[-3000:]
    # n_jobs=auto (the default), 4 jobs: all four units in the launcher's own process, no worker started.
    assert "sweeplab fused: worker " not in result.stdout and len(set(runs["tags.sweeplab.pid"])) == 1


def test_ctrl_c_kills_the_group_and_resume_finishes_it(tmp_path: Path) -> None:
    args = [*FUSED, "trainer.max_epochs=12", "seed=1,2", *NO_MODEL]
    exe = Path(sys.executable).with_name("sweeplab-train")
    process = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "epoch 3/12" in line:
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    runs = runs_of(_store(tmp_path))
    assert list(runs.status) == ["KILLED", "KILLED"]
    for folder in runs["tags.sweeplab.run_dir"]:
        assert (Path(folder) / "checkpoints" / "last.ckpt").is_file()
    start = time.perf_counter()
    resumed = cli([*args, "resume=auto"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming MLflow run") == 2, resumed.stdout[-2000:]
    assert time.perf_counter() - start < 280
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_store(tmp_path))
    runs = runs_of(_store(tmp_path))
    assert list(runs.status) == ["FINISHED", "FINISHED"]
    for run_id in runs.run_id:
        steps = [m.step for m in client.get_metric_history(run_id, "val/loss")]
        assert sorted(steps) == [20 * (e + 1) - 1 for e in range(12)]  # every epoch once, fused ones and resumed ones


def test_optuna_trials_fuse_per_batch(tmp_path: Path) -> None:
    """hydra.sweeper.n_jobs trials are asked together and train as one group; each value (or its
    pruning) reaches the study, and a pruned trial leaves its group at once."""
    result = cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra/launcher=fused",
            "optimized_metric=val/f1",
            "hydra.sweeper.seed=1",
            "hydra.sweeper.n_jobs=3",
            "hydra.sweeper.n_trials=6",
            "hydra.sweeper.pruner=median",
            "hydra.sweeper.params={optimizer:'choice(adam,sgd,rmsprop)',optimizer.lr:'tag(log, interval(0.001, 0.1))'}",
            "trainer.max_epochs=3",
            "print_config=false",
            *NO_MODEL,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "g1: jobs 0, 1, 2 train together" in result.stdout and "g2: jobs 3, 4, 5 train together" in result.stdout
    assert "6 trials: " in result.stdout and ", 0 failed" in result.stdout
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 6 and set(runs.status) == {"FINISHED"} and runs["tags.sweeplab.fused_group"].nunique() == 2
    import optuna

    storage = f"sqlite:///{next(tmp_path.glob('outputs/multirun/*/*/optuna.db'))}"
    trials = optuna.load_study(study_name="sweeplab", storage=storage).trials
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) + sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 6
    finished = {round(v, 6) for v in runs["metrics.val/f1"]}
    assert all(round(t.value, 6) in finished for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    tagged = runs.get("tags.sweeplab.pruned", None)
    assert (0 if tagged is None else int((tagged == "true").sum())) == len(pruned)


def test_plan_groups_by_model_data_and_trainer() -> None:
    from hydra_plugins.sweeplab_fused.fused_launcher import plan
    from sweeplab.config import compose

    configs = [
        compose(["seed=1", "optimizer=sgd"]),
        compose(["seed=2", "scheduler=cosine", "loss=cross_entropy"]),
        compose(["model.hidden_sizes=[32]"]),
        compose(["model=knn"]),
        compose(["seed=3"]),
        compose(["seed=4", "data.batch_size=32"]),
        compose(["seed=5", "data.batch_size=32"]),
    ]
    groups, alone = plan(configs, max_group=2)
    assert groups == [[0, 1], [5, 6]]
    assert alone == {
        2: "no other job of the sweep shares its model, data and trainer",
        3: "a scikit-learn estimator",
        4: "the last of a group split at max_group",
    }
    assert plan(configs, max_group=32)[0] == plan(configs, max_group=None)[0] == [[0, 1, 4], [5, 6]]
    seeds = [compose([f"seed={n}"]) for n in range(9)]
    assert plan(seeds, max_group=None)[0] == [list(range(9))]  # no cap: the memory sets how many train at once
    # Halved while a worker process would have nothing to do, never below 2 trials a group.
    assert plan(seeds, max_group=None, workers=2)[0] == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert plan(seeds, max_group=None, workers=8)[0] == [[0, 1], [2, 3], [4, 5], [6, 7, 8]]
    assert plan(seeds[:3], max_group=None, workers=2)[0] == [[0, 1, 2]]


def test_the_memory_a_group_may_use_is_read_as_a_size() -> None:
    from hydra_plugins.sweeplab_fused.fused_launcher import FusedLauncher

    sizes = {None: None, 1000: 1000, "4GB": 4 * 10**9, "512MiB": 512 * 2**20, "1.5 kib": 1536, "64b": 64}
    assert {given: FusedLauncher(memory=given).memory for given in sizes} == sizes
    for bad in ("lots", "4 GB of it", 0, -1, "0MB", True):
        with pytest.raises(ValueError, match=rf"hydra.launcher.memory={bad!r}: give bytes a group may use, e.g. 4GB"):
            FusedLauncher(memory=bad)


def test_worker_processes_get_about_as_many_jobs_each_in_the_sweeps_order() -> None:
    from hydra_plugins.sweeplab_fused.fused_launcher import FusedLauncher, Unit
    from hydra_plugins.sweeplab_fused.worker import _shares

    units = [Unit("g1", [(i, None) for i in range(6)]), Unit("g2", [(6, None), (7, None)]), Unit("g3", [(8, None)] * 4)]
    units += [Unit(None, [(9 + i, None)], "a scikit-learn estimator") for i in range(3)]
    shares = _shares(units, 2)
    assert [[u.name for u in share] for share in shares] == [["g1", None, None], ["g2", "g3", None]]
    assert [sum(len(u.jobs) for u in share) for share in shares] == [8, 7]
    assert len(_shares(units[:1], 4)) == 1  # never a worker with nothing to do
    for bad in (0, -1, 1.5, True, "2", "all"):
        with pytest.raises(
            ValueError, match=rf"hydra.launcher.n_jobs={bad!r}: give a whole number of worker processes, 1 or more .* or auto"
        ):
            FusedLauncher(n_jobs=bad)


def test_auto_gives_a_worker_a_core_to_large_sweeps_on_the_cpu() -> None:
    from hydra_plugins.sweeplab_fused.fused_launcher import JOBS_PER_WORKER, FusedLauncher, auto_workers

    assert JOBS_PER_WORKER == 4
    assert auto_workers(48, 2, False) == (2, "2 worker processes (48 jobs, 2 cores)")
    assert auto_workers(12, 8, False)[0] == 3  # 4 jobs a worker at least
    assert auto_workers(200, 8, False)[0] == 8  # a worker a core at most
    assert auto_workers(12, 2, False)[0] == 2
    assert auto_workers(6, 2, False) == (1, "this process (6 jobs, 2 cores; a worker process pays from 4 jobs each)")
    assert auto_workers(48, 1, False)[0] == 1
    assert auto_workers(64, 16, True) == (1, "this process (the jobs train on an accelerator, which worker processes would share)")
    # At most what half the free memory holds, at about 1 GiB a worker's imports.
    assert auto_workers(1000, 64, False, host_free=24 * 2**30) == (12, "12 worker processes (1000 jobs, 64 cores, memory for 12)")
    assert auto_workers(48, 2, False, host_free=24 * 2**30)[0] == 2
    assert auto_workers(48, 2, False, host_free=2**30)[0] == 1
    launcher = FusedLauncher()  # the default: auto, decided for each batch
    assert launcher.asked == "auto" and launcher.n_jobs == 1


def test_each_job_is_composed_once_when_the_sweeper_checked_the_batch() -> None:
    """The sweeper composes every job to check its batch; the launcher takes those configs instead
    of composing each job a second time."""
    from omegaconf import OmegaConf

    from hydra_plugins.sweeplab_fused.fused_launcher import FusedLauncher

    calls: list[tuple[str, ...]] = []

    class Repository:
        def group_exists(self, name):
            return False

    class Loader:
        repository = Repository()

        def load_sweep_config(self, master_config, sweep_overrides):
            calls.append(tuple(sweep_overrides))
            return OmegaConf.create({"job": list(sweep_overrides), "hydra": {"job": {}}})

    class Context:
        config_loader = Loader()

    def sweep(name):
        basic = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None}
        hydra = {"overrides": {"hydra": [], "task": []}, "job": {"config_name": "train"}, "sweeper": basic}
        return OmegaConf.create({"name": name, "hydra": hydra})

    master, other = sweep("sweep"), sweep("another")
    launcher = FusedLauncher()
    launcher.setup(hydra_context=Context(), task_function=lambda cfg: None, config=master)
    batch = [["seed=1"], ["lr=2"]]  # keys of their own: each composed by the loader (a later seed= job would be a copy)
    checked = [Context.config_loader.load_sweep_config(master_config=master, sweep_overrides=job) for job in batch]  # the sweeper's check
    taken = [launcher._compose(job) for job in batch]
    assert calls == [("seed=1",), ("lr=2",)] and [c.job for c in taken] == [["seed=1"], ["lr=2"]]
    assert taken[0] is checked[0] and not launcher.composed  # handed over, nothing kept
    launcher._compose(["epochs=3"])  # a job the sweeper did not check is composed now
    Context.config_loader.load_sweep_config(other, ["width=1"])  # another master config is not kept
    assert calls[2:] == [("epochs=3",), ("width=1",)] and not launcher.composed


@pytest.mark.parametrize("classes", [2, 5])
def test_a_groups_tally_gives_each_trial_its_own_metrics_values(classes: int) -> None:
    """One bincount a batch for the whole group: each trial's epoch values are the ones its own
    metric collection and weighted mean loss give on the same batches, under the same keys."""
    import torch
    from torchmetrics import MeanMetric

    from sweeplab.data.base import Task
    from sweeplab.families.torch.fused import _Tally
    from sweeplab.metrics.scores import build_metrics

    task = Task.BINARY if classes == 2 else Task.MULTICLASS
    generator = torch.Generator().manual_seed(0)
    tally = _Tally(3, classes, task is Task.BINARY, torch.device("cpu"))
    own = [(build_metrics(task, classes).clone(prefix="val/"), MeanMetric()) for _ in range(3)]
    for rows, members in ((8, [0, 1, 2]), (5, [0, 2]), (8, [0, 1, 2])):  # trial 1 left before the second batch
        predicted = torch.randint(0, classes, (len(members), rows), generator=generator)
        targets = torch.randint(0, classes, (len(members), rows), generator=generator)
        losses = torch.rand(len(members), generator=generator)
        tally.add(members, predicted, targets, losses)
        for k, member in enumerate(members):
            own[member][0].update(predicted[k], targets[k])
            own[member][1].update(losses[k], weight=rows)
    for member, (metrics, loss) in enumerate(own):
        expected = {"val/loss": loss.compute(), **metrics.compute()}
        got = tally.values(member, "val")
        assert got.keys() == expected.keys()
        for key in expected:
            assert float(got[key]) == pytest.approx(float(expected[key]), rel=1e-6), key
        assert tally.values(member, "val") == {}  # counted again from zero
    tally.add([0], torch.tensor([[0, 1]]), torch.tensor([[classes, 1]]), torch.tensor([0.5]))
    with pytest.raises(ValueError, match=f"1 target labels are outside the {classes} classes"):
        tally.values(0, "val")


def _trial_pids(uri: str) -> dict[str, set[str]]:
    """fused group -> the pids of the processes that ran its trials."""
    runs = runs_of(uri)
    return {group: set(rows["tags.sweeplab.pid"]) for group, rows in runs.groupby("tags.sweeplab.fused_group")}


def test_worker_processes_train_groups_side_by_side(tmp_path: Path) -> None:
    """hydra.launcher.n_jobs=2: two groups (two batch sizes) train at once, each in a worker process of its own."""
    args = [*FUSED, "hydra.launcher.n_jobs=2", "data.batch_size=32,64", "seed=1,2", "trainer.max_epochs=2", *NO_MODEL]
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trained, 0 skipped, 0 failed" in result.stdout and "2 worker processes" in result.stdout
    assert "fused group g1: jobs 0, 1 trained together" in result.stdout
    assert "fused group g2: jobs 2, 3 trained together" in result.stdout
    shares = sorted(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("sweeplab fused: worker "))
    assert [share.split(": ")[1] for share in shares] == ["g1", "g2"]
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 4 and set(runs.status) == {"FINISHED"}
    assert (runs["metrics.test/accuracy"] > 0.5).all()
    pids = _trial_pids(_store(tmp_path))
    assert len(pids) == 2 and all(len(p) == 1 for p in pids.values())
    assert len(set.union(*pids.values())) == 2  # one process a group
    assert len(sweeps_of(_store(tmp_path))) == 1


def test_a_sweep_of_several_groups_on_the_cpu_trains_them_in_a_worker_a_core_by_default(tmp_path: Path) -> None:
    """hydra.launcher.n_jobs=auto (the default): 8 jobs in two groups of 4 get two worker processes where
    there are two cores (as on CI), and say so; on one core they train in the launcher's process."""
    args = [*FUSED, "data.batch_size=32,64", "seed=range(1,5)", "trainer.max_epochs=1", *NO_MODEL]
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "8 trained, 0 skipped, 0 failed" in result.stdout
    workers = min(2, len(os.sched_getaffinity(0)))
    said = "2 worker processes (8 jobs, " if workers == 2 else "this process (8 jobs, 1 cores"
    assert f"sweeplab fused: hydra.launcher.n_jobs=auto: {said}" in result.stdout, result.stdout[:2000]
    pids = _trial_pids(_store(tmp_path))
    assert len(pids) == 2 and len(set.union(*pids.values())) == workers


def test_one_group_with_workers_to_spare_trains_in_the_launchers_process(tmp_path: Path) -> None:
    """n_jobs=2 but one group: no worker runs it, and the summary says each job's torch threads without workers."""
    result = cli([*FUSED, "hydra.launcher.n_jobs=2", "seed=1,2", "trainer.max_epochs=1", *NO_MODEL], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 trained, 0 skipped, 0 failed" in result.stdout and "fused group g1: jobs 0, 1 trained together" in result.stdout
    assert "sweeplab fused: worker " not in result.stdout and "worker processes" not in result.stdout
    assert {r["workers"] for r in map(json.loads, map(Path.read_text, tmp_path.glob("outputs/multirun/*/*/*/sweeplab_job.json")))} == {1}
    assert len(set(runs_of(_store(tmp_path))["tags.sweeplab.pid"])) == 1


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working folder is ``folder`` (Linux)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(proc / "cwd").resolve() == folder.resolve():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


# Loaded at interpreter start (PYTHONPATH): each process that imports Lightning writes its pid.
IMPORT_PROBE = """
import os, sys


class _Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "lightning":
            with open(os.environ["SWEEPLAB_TEST_IMPORTERS"], "a") as out:
                out.write(f"{os.getpid()}\\n")
        return None


sys.meta_path.insert(0, _Probe())
"""


@pytest.mark.cold_process  # the probe loads at interpreter start (sitecustomize)
def test_workers_are_forked_from_one_process_that_imported_what_jobs_need(tmp_path: Path) -> None:
    """n_jobs=2 over two batches (hydra.sweeper.max_batch_size=2), each of two units: four worker
    processes, all forked from one that imported Lightning (and what else a job needs) once, while
    the sweep was composed; no worker, and not the launcher, imports it again. A sweep too small for
    workers starts no such process; with SWEEPLAB_FUSED_SPAWN=1 each worker starts fresh."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "sitecustomize.py").write_text(IMPORT_PROBE)
    importers = tmp_path / "importers.txt"
    env = {"PYTHONPATH": str(tmp_path / "probe"), "SWEEPLAB_TEST_IMPORTERS": str(importers)}
    args = [*FUSED, "hydra.launcher.n_jobs=2", "hydra.sweeper.max_batch_size=2", "seed=1,2", "data.batch_size=32,64"]
    result = cli([*args, "trainer.max_epochs=1", *NO_MODEL], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trained, 0 skipped, 0 failed" in result.stdout
    assert result.stdout.count("sweeplab fused: worker 2 ") == 2  # each batch in two workers
    trials = set(runs_of(_store(tmp_path))["tags.sweeplab.pid"])
    assert len(trials) == 4
    imported = set(importers.read_text().split())
    assert len(imported) == 1 and not imported & trials, (imported, trials)
    # n_jobs=auto with a batch too small for workers: no such process is started, the launcher imports alone.
    importers.unlink()
    (tmp_path / "small").mkdir()
    result = cli([*FUSED, "seed=1,2", "trainer.max_epochs=1", *NO_MODEL], cwd=tmp_path / "small", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(importers.read_text().split()) == set(runs_of(_store(tmp_path / "small"))["tags.sweeplab.pid"])
    # SWEEPLAB_FUSED_SPAWN=1 (the way off Linux, where a fork is not safe): each worker starts fresh and
    # imports for itself, and the process that starts them imports nothing.
    importers.unlink()
    (tmp_path / "spawned").mkdir()
    result = cli([*args, "trainer.max_epochs=1", *NO_MODEL], cwd=tmp_path / "spawned", env={**env, "SWEEPLAB_FUSED_SPAWN": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trained, 0 skipped, 0 failed" in result.stdout
    runs = runs_of(_store(tmp_path / "spawned"))
    assert set(runs.status) == {"FINISHED"} and set(importers.read_text().split()) == set(runs["tags.sweeplab.pid"])


def _two_groups_training_in_workers(cwd: Path, stderr: int) -> subprocess.Popen:
    """A sweep of two groups of 12 epochs in 2 worker processes, once both groups are at epoch 3."""
    args = [*FUSED, "hydra.launcher.n_jobs=2", "data.batch_size=32,64", "seed=1,2", "trainer.max_epochs=12", *NO_MODEL]
    exe = Path(sys.executable).with_name("sweeplab-train")
    process = subprocess.Popen([str(exe), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert process.stdout is not None
    started = set()
    for line in process.stdout:
        if "epoch 3/12" in line:
            started.add(line.split(":")[1].strip())
            if len(started) == 2:
                break
    return process


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
def test_workers_whose_launcher_is_killed_end_their_trials_killed(tmp_path: Path) -> None:
    """SIGKILL of the sweep's process alone (no handler of its runs): the process its workers were
    forked from passes SIGTERM on to them, their trials end KILLED with their last.ckpt, the sweep's
    run is KILLED, and no process is left."""
    process = _two_groups_training_in_workers(tmp_path, stderr=subprocess.DEVNULL)
    process.kill()
    process.wait()
    deadline = time.time() + 90
    while _processes_in(tmp_path) and time.time() < deadline:
        time.sleep(0.5)
    assert _processes_in(tmp_path) == []
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 4 and set(runs.status) == {"KILLED"}, runs[["status", "tags.sweeplab.error"]]
    assert set(runs["tags.sweeplab.error"]) == {"Interrupted: interrupted by SIGTERM"}
    for folder in runs["tags.sweeplab.run_dir"]:
        assert (Path(folder) / "checkpoints" / "last.ckpt").is_file()
    assert list(sweeps_of(_store(tmp_path)).status) == ["KILLED"]


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
def test_sigterm_reaches_every_worker_and_kills_their_trials(tmp_path: Path) -> None:
    """SIGTERM to the sweep's process only: it passes the signal to each worker, whose trials end
    KILLED with their last.ckpt; the sweep exits 143 and leaves no process behind."""
    process = _two_groups_training_in_workers(tmp_path, stderr=subprocess.PIPE)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 4 and set(runs.status) == {"KILLED"}
    for folder in runs["tags.sweeplab.run_dir"]:
        assert (Path(folder) / "checkpoints" / "last.ckpt").is_file()
    assert len(set.union(*_trial_pids(_store(tmp_path)).values())) == 2
    assert _processes_in(tmp_path) == []


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
def test_a_worker_that_dies_leaves_no_run_running(tmp_path: Path) -> None:
    """A worker killed outright (SIGKILL, out of memory): the other worker's group finishes, the dead
    one's trials end KILLED, and the sweep fails in one line naming the worker."""
    args = [*FUSED, "hydra.launcher.n_jobs=2", "data.batch_size=32,64", "seed=1,2", "trainer.max_epochs=6", *NO_MODEL]
    exe = Path(sys.executable).with_name("sweeplab-train")
    process = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    victim = 0
    for line in process.stdout:
        if line.startswith("sweeplab fused: worker ") and line.rstrip().endswith("): g2"):
            victim = int(line.split("(pid ")[1].split(")")[0])
        if "g2: epoch 2/6" in line:
            break
    assert victim in _processes_in(tmp_path)
    os.kill(victim, signal.SIGKILL)
    _, err = process.communicate(timeout=180)
    assert process.returncode == 1
    assert f"worker process (pid {victim}) ended with exit code -9 before it reported its jobs" in err
    runs = runs_of(_store(tmp_path))
    by_pid = runs.groupby("tags.sweeplab.pid").status.apply(set).to_dict()
    assert by_pid.pop(str(victim)) == {"KILLED"} and list(by_pid.values()) == [{"FINISHED"}]
    assert all("its fused sweep's worker process died" in why for why in runs[runs.status == "KILLED"]["tags.sweeplab.error"])


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
def test_ctrl_c_while_workers_get_their_work_leaves_nothing_running(tmp_path: Path) -> None:
    """Ctrl-C the moment the work is handed out (the workers may still be importing): exit 130,
    no traceback, no worker left, no run RUNNING."""
    args = [*FUSED, "hydra.launcher.n_jobs=2", "data.batch_size=32,64", "seed=1,2", "trainer.max_epochs=12", *NO_MODEL]
    exe = Path(sys.executable).with_name("sweeplab-train")
    process = subprocess.Popen([str(exe), *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("sweeplab fused: worker 2 "):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.rstrip().endswith("sweeplab-train: interrupted (SIGINT)")
    time.sleep(0.5)
    assert _processes_in(tmp_path) == []
    runs = runs_of(_store(tmp_path))
    assert "RUNNING" not in set(runs.status)

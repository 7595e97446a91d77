"""hydra/sweeper=optuna (sweeplab's plugin on optuna 5): search space, samplers,
shared and resumable studies, pruning, through the console script and the stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import NO_MODEL, cli, postgres_database, runs_of, sweeps_of

QUICK = ["trainer.max_epochs=3", "callbacks=none", "data=iris", "print_config=false", *NO_MODEL]
SEARCH = ["-m", "hydra/sweeper=optuna", "optimized_metric=val/f1", "optimizer.lr=tag(log, interval(0.001, 0.1))"]


def _study(db: Path, name: str = "sweeplab"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


# ---------------------------------------------------------------- units


def test_search_space_reads_hydras_sweep_grammar() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from sweeplab.sweeps.optuna import grid_of, search_space

    params = {"optimizer": "choice(adam, sgd)", "optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "data.batch_size": "range(16, 80, 16)"}
    space, fixed = search_space(
        params, ["seed=1,2", "trainer.max_epochs=3", "optimizer=choice(adam, rmsprop)", "model.dropout=interval(0, 1)"]
    )
    assert space["optimizer"] == CategoricalDistribution(["adam", "rmsprop"])  # the command line wins over params
    assert space["optimizer.lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert space["data.batch_size"] == IntDistribution(16, 64, step=16)  # stop excluded, as in Python's range
    assert space["seed"] == CategoricalDistribution([1, 2])
    assert space["model.dropout"] == FloatDistribution(0.0, 1.0)  # Hydra's interval() is continuous
    assert fixed == ["trainer.max_epochs=3"]
    assert grid_of({k: space[k] for k in ("optimizer", "data.batch_size", "seed")}) == {
        "optimizer": ["adam", "rmsprop"],
        "data.batch_size": [16, 32, 48, 64],
        "seed": [1, 2],
    }
    with pytest.raises(ValueError, match=r"sampler=grid: optimizer.lr is a continuous interval; give it as choice"):
        grid_of(space)


def test_bad_sweeper_options_are_one_line() -> None:
    from sweeplab.sweeps.optuna import build_pruner, build_sampler, directions_of

    with pytest.raises(ValueError, match=r"hydra.sweeper.sampler=bogus: not a sampler; choose one of tpe, random, cmaes, nsga2, grid"):
        build_sampler("bogus", 1, {})
    with pytest.raises(ValueError, match=r"hydra.sweeper.pruner=sometimes: not a pruner; choose one of none, median, hyperband"):
        build_pruner({"pruner": "sometimes"})
    with pytest.raises(ValueError, match=r"hydra.sweeper.direction=up: choose maximize or minimize"):
        directions_of("up", None)
    assert directions_of("maximize", ["maximize", "MINIMIZE"]) == ["maximize", "minimize"]
    assert type(build_sampler("nsga2", 3, {})).__name__ == "NSGAIISampler"
    assert type(build_sampler({"_target_": "optuna.samplers.RandomSampler", "seed": 1}, None, {})).__name__ == "RandomSampler"


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,expected",
    [
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0: must be a positive integer"),
        (["hydra.sweeper.n_trials=-1"], "hydra.sweeper.n_trials=-1: must be a positive integer"),
        (["hydra.sweeper.storage=bogus://x"], "hydra.sweeper.storage=bogus://x: not a database optuna can keep a study in"),
        (["model.dropout=interval(0.3,0.001)"], "model.dropout=interval(0.3,0.001): the lower bound (0.3) must be below the upper one"),
        (["optimizer.lr=tag(log, interval(0, 0.1))"], "a log-scale interval needs bounds > 0 (the lower one is 0.0)"),
    ],
)
def test_bad_study_settings_through_the_console_script_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    result = cli([*SEARCH, *QUICK, *args], cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stdout[-1000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("sweeplab-train: error: ") and expected in line, line
    db = tmp_path / "outputs" / "mlflow.db"
    assert not db.exists() or runs_of(f"sqlite:///{db}").empty  # no trial trained


def test_trials_interrupted_and_set_aside_do_not_count(tmp_path: Path) -> None:
    """n_trials counts every trial asked, failed ones too, but not one failed by an
    interruption and asked again, nor a surplus trial of a concurrent sweep."""
    import optuna
    from optuna.trial import TrialState

    from sweeplab.sweeps.optuna import SURPLUS, _counted, fail_and_retry, open_storage, outcome

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s")
    a, b, c = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), study.ask(), study.ask()
    study.tell(a, 0.5)
    study.tell(b, state=TrialState.FAIL)  # a trial that failed on its own counts
    assert fail_and_retry(study, c._trial_id) and not fail_and_retry(study, c._trial_id)  # only once
    retry = study.ask()
    assert retry.params == c.params and retry.number == 3
    d = study.ask()
    d.set_user_attr(SURPLUS, True)
    study.tell(d, state=TrialState.FAIL)
    assert [t.number for t in _counted(study.get_trials())] == [0, 1, 3]
    assert outcome(study, retry._trial_id, float("nan"), False, 1) == (TrialState.FAIL, None)
    assert outcome(study, retry._trial_id, [0.9, 2.0], False, 2) == (TrialState.COMPLETE, [0.9, 2.0])
    assert outcome(study, retry._trial_id, 0.9, False, 2)[0] == TrialState.FAIL  # one value for two objectives


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_sweeps_share_one_study_without_duplicates(tmp_path: Path) -> None:
    """Two sweep processes, one SQLite study, 6 trials in total: each trial once, in MLflow with its trial number."""
    from mlflow.tracking import MlflowClient

    db, store = tmp_path / "optuna.db", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    (tmp_path / "outputs").mkdir()
    MlflowClient(store).create_experiment("shared")  # the MLflow store exists before both start (see STACK_NOTES)
    args = [*SEARCH, f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=6"]
    args += ["experiment_name=shared", *QUICK]
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    sweeps = [
        subprocess.Popen(
            [str(exe), *args, f"hydra.sweeper.seed={i}"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for i in (1, 2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in sweeps]
    assert [p.returncode for p in sweeps] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    from sweeplab.sweeps.optuna import _counted

    trials = _counted(_study(db, "shared").get_trials())
    assert len(trials) == 6 and {t.state.name for t in trials} == {"COMPLETE"}
    assert all(out.count("Launching 1 jobs locally") >= 1 for out in outputs)  # both sweeps ran trials
    runs = runs_of(store, "shared")
    assert len(runs) == 6 and set(runs.status) == {"FINISHED"}
    assert sorted(runs["tags.sweeplab.optuna.trial"].astype(int)) == sorted(t.number for t in trials)
    assert set(runs["tags.sweeplab.optuna.study"]) == {"shared"}
    by_trial = {t.number: t.params["optimizer.lr"] for t in trials}
    for _, run in runs.iterrows():  # each run trained its own trial's parameters
        assert float(run["params.optimizer.lr"]) == pytest.approx(by_trial[int(run["tags.sweeplab.optuna.trial"])])
    assert "best trial" in outputs[0] + outputs[1] and "hydra.mode=RUN" in outputs[0] + outputs[1]
    # What each trial returned is its run's val/f1; the best of the whole study is reported by both sweeps.
    values = {t.number: t.value for t in trials}
    for _, run in runs.iterrows():
        assert values[int(run["tags.sweeplab.optuna.trial"])] == pytest.approx(run["metrics.val/f1"])
    from omegaconf import OmegaConf

    for found in tmp_path.glob("outputs/multirun/*/*/optimization_results.yaml"):
        assert OmegaConf.load(found).best_value == pytest.approx(runs["metrics.val/f1"].max())


def _third_trial_training(study_db: Path, mlflow_db: Path) -> bool:
    """Read with sqlite3 alone: cheap enough to poll while a trial of a few seconds runs."""
    import sqlite3

    if not study_db.exists() or not mlflow_db.exists():
        return False
    try:
        with sqlite3.connect(study_db, timeout=5) as db:
            if not db.execute("SELECT 1 FROM trials WHERE number = 2 AND state = 'RUNNING'").fetchone():
                return False
        with sqlite3.connect(mlflow_db, timeout=5) as db:
            query = (
                "SELECT 1 FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'sweeplab.optuna.trial' AND t.value = '2' "
                "WHERE r.status = 'RUNNING' AND EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid AND m.key = 'train/loss')"
            )
            return db.execute(query).fetchone() is not None
    except sqlite3.OperationalError:  # a table not created yet
        return False


@pytest.mark.slow
def test_a_killed_sweep_resumes_its_study(tmp_path: Path) -> None:
    """SIGKILL of the sweep during its third trial; the same command again keeps the two
    finished trials, marks the third failed and asks its parameters again."""
    from optuna.trial import TrialState

    db = tmp_path / "optuna.db"
    args = [*SEARCH, f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.n_trials=3", "hydra.sweeper.seed=5", *QUICK]
    args[args.index("data=iris")], args[args.index("trainer.max_epochs=3")] = "data=digits", "trainer.max_epochs=20"
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    sweep = subprocess.Popen(
        [str(exe), *args], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 180
    try:
        while time.time() < deadline and sweep.poll() is None:  # until the third trial's run is training
            time.sleep(0.2)
            if _third_trial_training(db, tmp_path / "outputs" / "mlflow.db"):
                break
        else:
            pytest.fail("the sweep never reached its third trial")
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    before = {t.number: (t.state, t.params) for t in _study(db).get_trials()}
    assert [before[n][0] for n in (0, 1, 2)] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]

    again = cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "optuna study sweeplab: 2 of 3 trials already there, 1 interrupted trial(s) failed (asked again where a job had them)"
        in again.stdout
    )
    trials = {t.number: t for t in _study(db).get_trials()}
    assert [(trials[n].state, trials[n].params) for n in (0, 1)] == [before[0], before[1]]  # kept as they were
    assert trials[2].state == TrialState.FAIL
    retry = next(t for t in trials.values() if t.system_attrs.get("failed_trial") == 2)
    assert retry.state == TrialState.COMPLETE and retry.params == before[2][1]
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 3 and "3 trials: 3 complete" in again.stdout
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert set(runs.status) == {"FINISHED", "KILLED"} and (runs.status == "FINISHED").sum() == 3
    killed = runs[runs.status == "KILLED"].iloc[0]  # the killed trial's run, closed when its retry started
    assert killed["tags.sweeplab.optuna.trial"] == "2" and "killed or crashed" in killed["tags.sweeplab.error"]


@pytest.mark.slow
def test_pruning_stops_a_bad_trial_and_mlflow_says_so(tmp_path: Path) -> None:
    args = ["hydra/sweeper=optuna", "optimized_metric=val/f1", "hydra.sweeper.sampler=grid", "hydra.sweeper.seed=0"]
    args += ["hydra.sweeper.pruner=median", "hydra.sweeper.n_startup_trials=1", "hydra.sweeper.n_warmup_steps=0"]
    args += ["optimizer.lr=choice(0.1, 10.0)", "seed=choice(1, 2, 3)", "hydra.sweeper.n_trials=8", *QUICK]
    args[args.index("trainer.max_epochs=3")] = "trainer.max_epochs=4"
    result = cli(["-m", *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the grid has 6 points; n_trials=8 becomes 6" in result.stdout
    db = next((tmp_path / "outputs" / "multirun").glob("*/*/optuna.db"))  # no storage given: the sweep folder's
    trials = _study(db).get_trials()
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert len(trials) == 6 and any(t.params["optimizer.lr"] == 10.0 for t in pruned)
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    assert set(runs.status) == {"FINISHED"}
    marked = runs[runs["tags.sweeplab.pruned"] == "true"]
    assert sorted(marked["tags.sweeplab.optuna.trial"].astype(int)) == sorted(t.number for t in pruned)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    for _, run in marked.iterrows():  # stopped early, with its last metrics and its test
        trial = next(t for t in pruned if t.number == int(run["tags.sweeplab.optuna.trial"]))
        assert len(client.get_metric_history(run.run_id, "val/f1")) == len(trial.intermediate_values) < 4
        assert run["tags.sweeplab.pruned_epoch"] == str(max(trial.intermediate_values))
        assert run["metrics.test/f1"] >= 0
    assert f"{len(pruned)} pruned" in result.stdout
    # Another study in the same MLflow experiment asks the same grid: a pruned run is no finished result to reuse.
    second = cli(["-m", *args, f"hydra.sweeper.storage=sqlite:///{tmp_path / 'second.db'}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("identical config finished as run") == 6 - len(pruned)
    again = _study(tmp_path / "second.db").get_trials()
    retrained = {t.number for t in again if t.params in [p.params for p in pruned]}
    assert retrained and all(t.state.name in ("PRUNED", "COMPLETE") for t in again)
    assert len(runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")) == 6 + len(pruned)  # only the pruned ones trained again


@pytest.mark.slow
def test_two_objectives_give_a_pareto_front(tmp_path: Path) -> None:
    args = ["hydra/sweeper=optuna", "optimized_metric=[val/f1,time/fit_s]", "hydra.sweeper.directions=[maximize,minimize]"]
    args += ["hydra.sweeper.sampler=nsga2", "hydra.sweeper.n_trials=2", "optimizer=choice(adam, sgd)", *QUICK]
    args += ["hydra.sweeper.n_jobs=2"]  # both trials asked at once, one batch for the launcher
    result = cli(["-m", *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    from omegaconf import OmegaConf

    found = OmegaConf.load(next((tmp_path / "outputs" / "multirun").glob("*/*/optimization_results.yaml")))
    assert found.metrics == ["val/f1", "time/fit_s"] and 1 <= len(found.solutions) <= 2
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    for solution in found.solutions:
        # a trial whose config an earlier trial already trained reuses its run (skip_finished): both numbers are tagged
        run = runs[runs["tags.sweeplab.optuna.trial"].str.split().apply(lambda numbers, n=str(solution.trial): n in numbers)].iloc[0]
        assert solution["values"][0] == pytest.approx(run["metrics.val/f1"])
        assert 0 < solution["values"][1] < (run.end_time - run.start_time).total_seconds() + 5
    assert (result.stdout + result.stderr).count("Launching 2 jobs locally") == 1  # one batch of two trials
    from mlflow.tracking import MlflowClient

    (sweep_run,) = sweeps_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").run_id  # the study's results in the sweep's own run
    assert "optimization_results.yaml" in {
        a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").list_artifacts(sweep_run)
    }
    bad = cli(["-m", *args[:2], "hydra.sweeper.n_trials=1", *QUICK], cwd=tmp_path)
    assert bad.returncode != 0
    assert "hydra.sweeper.directions=['maximize']: one direction per optimized_metric ['val/f1', 'time/fit_s']" in bad.stderr


def test_a_sweeper_that_stopped_beating_has_its_trial_asked_again(tmp_path: Path) -> None:
    """Another machine's sweep died: its trial's heartbeat goes silent, and after the grace period the next sweep re-asks it."""
    import optuna

    from sweeplab.sweeps.optuna import Heartbeat, open_storage, recover

    study = optuna.create_study(
        storage=open_storage(f"sqlite:///{tmp_path / 'b.db'}", heartbeat_interval=1, grace_period=1), study_name="b"
    )
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    Heartbeat(study).track([trial._trial_id])  # one beat, then the sweeper is gone (no thread started)
    assert recover(study) == 0  # within the grace period: still somebody's
    time.sleep(2.2)
    assert recover(study) == 1
    retry = study.ask()
    assert retry.params == trial.params and study.trials[retry.number].system_attrs["failed_trial"] == trial.number


def test_a_second_sweep_with_the_same_seed_draws_new_values(tmp_path: Path) -> None:
    import optuna

    from sweeplab.sweeps.optuna import SURPLUS, _ask, open_storage

    study = optuna.create_study(
        storage=open_storage(f"sqlite:///{tmp_path / 'd.db'}"), study_name="d", sampler=optuna.samplers.RandomSampler(seed=1)
    )
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    first = _ask(study, 5, 1, space, ["seed=1"])[0]
    study.tell(first, 0.5)
    study.sampler = optuna.samplers.RandomSampler(seed=1)  # what a second terminal with the same command draws
    second = _ask(study, 5, 1, space, ["seed=1"])[0]
    assert second.params != first.params
    states = [(t.state.name, t.user_attrs.get(SURPLUS)) for t in study.get_trials()]
    assert states == [("COMPLETE", None), ("FAIL", True), ("RUNNING", None)]  # the repeat was set aside, not run
    assert study.get_trials()[2].user_attrs["sweeplab.overrides"] == ["seed=1", f"x={second.params['x']}"]


def test_a_batch_whose_draws_all_repeat_a_trial_in_flight_keeps_the_last_draw(tmp_path: Path) -> None:
    """optimizer=choice(adam, sgd) with n_jobs=2 under NSGA-II drew the in-flight value three times; the
    third set-aside trial was then given its owner and failed the sweep with UpdateFinishedTrialError."""
    import optuna

    from sweeplab.sweeps.optuna import SURPLUS, _ask, open_storage

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'c.db'}"), study_name="c")
    space = {"optimizer": optuna.distributions.CategoricalDistribution(["adam"])}  # every draw repeats the first
    batch = _ask(study, 2, 2, space, [])
    assert [t.params for t in batch] == [{"optimizer": "adam"}] * 2
    states = [(t.state.name, bool(t.user_attrs.get(SURPLUS))) for t in study.get_trials()]
    assert states == [("RUNNING", False), ("FAIL", True), ("FAIL", True), ("RUNNING", False)]
    assert study.get_trials()[3].user_attrs["sweeplab.overrides"] == ["optimizer=adam"]


@pytest.mark.slow
def test_a_trial_asked_by_a_sweeper_killed_before_handing_it_out_does_not_count(tmp_path: Path) -> None:
    """SIGKILL between study.ask and the trial's owner record left a RUNNING trial with no params, owner
    or heartbeat that counted toward n_trials: the study never got its last result."""
    import sqlite3

    import optuna

    from sweeplab.sweeps.optuna import SURPLUS, open_storage

    db = tmp_path / "study.db"
    study = optuna.create_study(storage=open_storage(f"sqlite:///{db}"), study_name="sweeplab", direction="maximize")
    orphan = study.ask()  # what the killed sweeper left: asked, never handed to a job
    with sqlite3.connect(db) as conn:  # asked two minutes ago
        conn.execute("UPDATE trials SET datetime_start = datetime('now', '-2 minutes') WHERE trial_id = ?", (orphan._trial_id,))
    args = [*SEARCH, *QUICK, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=sqlite:///{db}"]
    result = cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 of 2 trials already there, 1 interrupted trial(s) failed" in result.stdout
    trials = _study(db).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs.get(SURPLUS) is True
    again = cli(args, cwd=tmp_path)  # the study is complete: nothing more to train
    assert "2 of 2 trials already there" in again.stdout and len(_study(db).get_trials()) == 3


def _trials_on_the_server(database: str, study: str) -> list:
    """The study's trials, its connections closed after (left open, a later test in the process
    fails on their ResourceWarning when they are collected)."""
    import optuna

    storage = optuna.storages.RDBStorage(database)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


@pytest.mark.slow
def test_two_sweeps_started_together_on_postgresql_never_train_one_config_twice(tmp_path: Path) -> None:
    """Same seed, same moment, a server database (no lock file spaces their starts): both used to count
    0 trials and train the same first values as trials 0 and 1."""
    import optuna
    from mlflow.tracking import MlflowClient

    from sweeplab.sweeps.optuna import _counted

    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    (tmp_path / "outputs").mkdir()
    MlflowClient(store).create_experiment("raced")
    with postgres_database() as (database, _):
        args = [*SEARCH, f"hydra.sweeper.storage={database}", "hydra.sweeper.study_name=raced", "hydra.sweeper.n_trials=4"]
        args += ["hydra.sweeper.seed=1", "experiment_name=raced", *QUICK]
        exe = Path(sys.executable).with_name("sweeplab-train")
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        sweeps = [
            subprocess.Popen([str(exe), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in (1, 2)
        ]
        outputs = [p.communicate(timeout=300)[0] for p in sweeps]
        assert [p.returncode for p in sweeps] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trials = _counted(_trials_on_the_server(database, "raced"))
    values = [t.params["optimizer.lr"] for t in trials]
    assert len(trials) == 4 and len(set(values)) == 4, values
    runs = runs_of(store, "raced")
    assert len(runs) == 4 and runs["tags.sweeplab.config_hash"].nunique() == 4


def _ask_at_the_barrier(database: str, barrier, answers) -> None:
    import optuna

    from sweeplab.sweeps.optuna import _ask, build_sampler, open_storage

    space = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    study = optuna.load_study(study_name="raced", storage=open_storage(database))
    study.sampler = build_sampler("tpe", 1, space)  # both sweeps seeded alike: the same first values
    barrier.wait()  # both count the study's trials before either has asked
    answers.put([(t.number, t.params["optimizer.lr"]) for t in _ask(study, 4, 1, space, [])])


@pytest.mark.slow
def test_two_sweepers_asking_at_the_same_instant_get_different_values(tmp_path: Path) -> None:
    """The race itself, forced: two processes count 0 trials, then ask with the same seed."""
    import multiprocessing

    import optuna

    from sweeplab.sweeps.optuna import SURPLUS, open_storage

    with postgres_database() as (database, _):
        storage = open_storage(database)
        optuna.create_study(study_name="raced", storage=storage, direction="maximize")
        storage.engine.dispose()
        fork = multiprocessing.get_context("fork")
        barrier, answers = fork.Barrier(2), fork.Queue()
        askers = [fork.Process(target=_ask_at_the_barrier, args=(database, barrier, answers)) for _ in range(2)]
        for asker in askers:
            asker.start()
        got = [answers.get(timeout=120) for _ in askers]
        for asker in askers:
            asker.join(timeout=60)
        trials = _trials_on_the_server(database, "raced")
    kept = [trial for batch in got for trial in batch]
    assert len(kept) == 2 and kept[0][1] != kept[1][1], got  # never one config twice
    set_aside = [t for t in trials if t.user_attrs.get(SURPLUS)]
    assert all(t.state.name == "FAIL" for t in set_aside)

"""Sweeps and DDP on a real one-node SLURM cluster (tests/slurm/start_cluster.sh;
CI installs Debian's slurmctld, slurmd, slurm-client and munge and runs as root).
Without them the tests skip, saying why."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import NO_MODEL, cli, runs_of, saved_predictions, store_overrides, sweeps_of, train_in_process

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
QUICK = ["trainer.max_epochs=2", "callbacks=none", "data=iris", "print_config=false", *NO_MODEL]
SLURM = ["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=10"]
CALLBACKS_ENV = {"PYTHONPATH": str(HERE)}  # the jobs import tests/signal_callbacks.py (sbatch passes the environment on)


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    if sys.platform != "linux":
        pytest.skip("SLURM tests run on Linux")
    started = subprocess.run(["bash", str(HERE / "slurm" / "start_cluster.sh")], capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        pytest.skip((started.stdout + started.stderr).strip().splitlines()[-1])
    # The suite sets OMP_NUM_THREADS=1, which nproc honours: a node of 1 CPU would queue the DDP job forever.
    node_cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]
    assert node_cpus == str(len(os.sched_getaffinity(0))), f"the node has {node_cpus} CPUs, this machine {os.cpu_count()}"


@pytest.fixture(autouse=True)
def _one_test_at_a_time(cluster: None) -> None:
    """The one-node cluster has as many CPUs as the machine: a test's job waiting in the queue
    for another test's jobs would spend its time there (and squeue would show both tests' jobs)."""
    import fcntl

    with open(Path(tempfile.gettempdir()) / "sweeplab-slurm-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
        # A job a test left behind would sit in the next test's queue checks: cancel it here, and
        # say so in this test's failure, where it came from.
        left = subprocess.run(["squeue", "--noheader", "--format=%i %j %T %r"], capture_output=True, text=True).stdout.strip()
        if left and not _queue_drained(timeout=30):
            subprocess.run(["scancel", "--full", *[line.split()[0] for line in left.splitlines()]], capture_output=True)
            _queue_drained(timeout=30)
            pytest.fail(f"jobs left in the queue after the test (cancelled now):\n{left}")


def _store(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"


def _cluster_state(cwd: Path) -> str:
    """What the cluster and the jobs say, for a failure message: the queue, the jobs, their logs' ends."""
    parts = []
    for command in (["squeue", "--all", "--format=%i %j %T %r %M %C"], ["scontrol", "show", "job"]):
        shown = subprocess.run(command, capture_output=True, text=True)
        parts.append(f"$ {' '.join(command)}\n{(shown.stdout + shown.stderr).strip()[-2000:]}")
    for log in sorted(cwd.glob("outputs/multirun/*/*/.submitit/*/*_log.*")):
        parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)


def _slurm_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The console script, its failure or time-out reported with the cluster's and the jobs' state."""
    try:
        result = cli(args, cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"no answer in {timeout} s\n{exc.stdout or ''}\n{_cluster_state(cwd)}") from None
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{_cluster_state(cwd)}"
    return result


def _queue_drained(timeout: float = 90.0) -> bool:
    """No job left in squeue (a job lingers a few seconds after its result is written)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not subprocess.run(["squeue", "--noheader"], capture_output=True, text=True).stdout.strip():
            return True
        time.sleep(1.0)
    return False


def test_a_sweep_runs_as_slurm_jobs_into_one_store(tmp_path: Path) -> None:
    fail_seed_3 = "+callbacks.fail={_target_: signal_callbacks.FailAtFitStart, seed: 3}"
    result = _slurm_cli([*SLURM, "seed=1,2,3", *QUICK, fail_seed_3], tmp_path, env=CALLBACKS_ENV)
    output = result.stdout + result.stderr
    # No accounting on this cluster: said once, and submitit's per-poll sacct warnings are gone.
    assert output.count("job states come from squeue") == 1 and "sacct error" not in output
    assert "3 jobs: 2 trained, 0 skipped, 1 failed" in result.stdout
    assert "job 2 failed: RuntimeError: a planned failure at the start of fitting" in result.stdout
    submitted = list(tmp_path.glob("outputs/multirun/*/*/.submitit/*/*_submission.sh"))
    assert submitted and "#SBATCH" in submitted[0].read_text()  # through sbatch, not a local process
    runs = runs_of(_store(tmp_path))
    assert len(runs) == 3 and runs["tags.sweeplab.sweep_id"].nunique() == 1
    assert list(sweeps_of(_store(tmp_path)).status) == ["FINISHED"]  # SLURM jobs nest their runs under the sweep's
    assert dict(zip(runs["params.seed"].astype(int), runs.status)) == {1: "FINISHED", 2: "FINISHED", 3: "FAILED"}
    assert "planned failure" in runs.loc[runs["params.seed"] == "3", "tags.sweeplab.error"].iloc[0]
    assert _queue_drained()


def test_scancel_leaves_the_run_killed_and_resume_continues_it(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    overrides = [
        "seed=1",
        "trainer.max_epochs=3",
        "data=iris",
        "print_config=false",
        *NO_MODEL,
        "+callbacks.hold={_target_: signal_callbacks.HoldAtEpoch}",
    ]
    exe = Path(sys.executable).with_name("sweeplab-train")
    env = {**os.environ, **CALLBACKS_ENV, "PYTHONUNBUFFERED": "1", "SWEEPLAB_TEST_HOLD": str(hold)}
    env.pop("MLFLOW_TRACKING_URI", None)
    sweep = subprocess.Popen(
        [str(exe), *SLURM, *overrides], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240  # a loaded machine starts a SLURM job slowly
    while not list(hold.glob("held-*")) and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.5)
    assert list(hold.glob("held-*")), f"the job never reached epoch 1\n{_cluster_state(tmp_path)}"
    job = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True).stdout.split()
    assert len(job) == 1
    subprocess.run(["scancel", job[0]], check=True)  # SIGTERM to the job's processes, SIGKILL after KillWait
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, f"{err[-3000:]}\n{_cluster_state(tmp_path)}"
    assert f"SLURM job {job[0]} ended CANCELLED without a result" in err
    assert "1 jobs: 0 trained, 0 skipped, 0 failed, 1 left no record" in out
    runs = runs_of(_store(tmp_path))
    assert list(runs.status) == ["KILLED"] and "SIGTERM" in runs["tags.sweeplab.error"].iloc[0]
    run_id = runs.run_id.iloc[0]
    assert _queue_drained()

    resumed = cli([*overrides, "resume=auto"], cwd=tmp_path, env=CALLBACKS_ENV)  # the same config, by hand
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming MLflow run {run_id}" in resumed.stdout
    runs = runs_of(_store(tmp_path))
    assert list(runs.run_id) == [run_id] and list(runs.status) == ["FINISHED"]
    from mlflow.tracking import MlflowClient

    epochs = [m.step for m in MlflowClient(_store(tmp_path)).get_metric_history(run_id, "val/loss")]
    assert len(epochs) == len(set(epochs)) == 3  # each epoch once: the run went on from its checkpoint


def test_ddp_over_two_slurm_tasks_matches_one_process(store, tmp_path: Path) -> None:
    """trainer=ddp as two SLURM tasks: Lightning takes the ranks from SLURM (no processes of its own),
    rank 0 alone tracks; its test scores are those of one process within 2 of the 27 test samples."""
    from sklearn.metrics import accuracy_score

    common = ["seed=1", "trainer.max_epochs=10", "data=wine", "callbacks.progress_bar=null", "print_config=false", *NO_MODEL]
    ddp = [*SLURM, "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1", "trainer=ddp", "trainer.accelerator=cpu"]
    # Two processes of 16 take the same 32 samples a step as one process of 32.
    _slurm_cli([*ddp, "trainer.devices=2", "data.batch_size=16", *common, "experiment_name=ddp"], tmp_path)
    one = train_in_process(["data.batch_size=32", *common, "experiment_name=single", *store_overrides(store)], tmp_path / "single")
    logs = sorted(tmp_path.glob("outputs/multirun/*/*/.submitit/*/*_log.err"))
    assert len(logs) == 2  # one log per SLURM task
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs[0].read_text() and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1].read_text()
    runs = runs_of(_store(tmp_path), "ddp")
    assert len(runs) == 1 and runs.status[0] == "FINISHED" and runs["params.trainer.strategy"][0] == "ddp"
    y_true, y_pred = saved_predictions(next(tmp_path.glob("outputs/multirun/*/*/0/test_predictions.csv")))
    assert len(y_true) == 27  # every test sample once
    assert runs["metrics.test/accuracy"][0] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    assert abs(runs["metrics.test/accuracy"][0] - one["test/accuracy"]) <= 2 / 27 + 1e-6
    assert _queue_drained()


@pytest.mark.parametrize("option,seeds", [("tasks_per_node", "1,2"), ("cpus_per_task", "1,2"), ("cpus_per_task", "1")])
def test_a_job_asking_more_than_the_partition_has_is_cancelled_saying_why(option: str, seeds: str, tmp_path: Path) -> None:
    """Without EnforcePartLimits SLURM queues such a job for PartitionConfig forever: the sweep says so,
    cancels it and goes on, without submitit's wait for result files a job that never ran cannot write.
    (cpus_per_task used to be counted as trained, or a one-job sweep printed no summary.)"""
    node_cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0].rstrip("+"))
    asked = node_cpus + 2
    started = time.monotonic()
    result = _slurm_cli([*SLURM, f"hydra.launcher.{option}={asked}", f"seed={seeds}", *QUICK], tmp_path, timeout=120)
    waited = time.monotonic() - started
    said = f"(PartitionConfig: it asks {asked} CPUs on 1 node(s), the largest node there has {node_cpus}); cancelled it"
    assert result.stderr.count(said) == 1, result.stderr[-2000:]  # one array of jobs: one line
    n = len(seeds.split(","))
    assert result.stderr.count("ended CANCELLED without a result") == n  # a line a job, not a line a task
    assert f"{n} jobs: 0 trained, 0 skipped, 0 failed, {n} never started" in result.stdout, result.stdout[-2000:]
    for num, seed in enumerate(seeds.split(",")):
        assert f"job {num} never started (cancelled, see above): seed={seed}" in result.stdout
    assert waited < 45, waited  # noticed at the first look (2 s), not after a time-out
    assert runs_of(_store(tmp_path)).empty  # no run was opened for them

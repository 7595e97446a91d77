"""The fused launcher composes each shape of job once and gives every later job of that shape
its own values: the configs must be exactly what Hydra composes for each job."""

from __future__ import annotations

import pytest
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.sweeplab_fused.compose import shape_composer
from sweeplab.config import CONFIG_MODULE, register_experiments

# Jobs as a sweeper hands them over: each list one job's overrides.
JOBS = [
    ["optimizer.lr=0.001", "data.batch_size=32", "seed=1"],
    ["optimizer.lr=0.003", "data.batch_size=64", "seed=2"],
    ["optimizer.lr=0.01", "data.batch_size=32", "seed=2"],
    ["model=cnn", "optimizer.lr=0.01", "seed=3"],  # a group chosen: another shape
    ["model=cnn", "optimizer.lr=0.1", "seed=4"],
    ["model.hidden_sizes=[64,32]", "optimizer=sgd", "optimizer.lr=0.5"],
    ["model.hidden_sizes=[8]", "optimizer=sgd", "optimizer.lr=0.2"],
    ["model.hidden_sizes=null", "optimizer=sgd", "optimizer.lr=0.2"],
    ["+trainer.limit_train_batches=2", "trainer.max_epochs=1"],  # + adds: part of the shape
    ["+trainer.limit_train_batches=3", "trainer.max_epochs=2"],  # another value added: another shape
    ["trainer.max_epochs=3", "data.batch_size=${trainer.max_epochs}"],  # an interpolation as a value
    ["trainer.max_epochs=4", "data.batch_size=${trainer.max_epochs}"],
    ["experiment=optimizers_digits", "optimizer=adam", "seed=5"],
    ["experiment=optimizers_digits", "optimizer=adam", "seed=6"],
    ["optimizer.lr='0.5'", "data.batch_size=32", "seed=7"],  # a quoted string
    ["model={hidden_sizes:[4]}", "seed=8"],  # a dict value: composed by Hydra
    ["model.hidden_sizes=[4]", "model.hidden_sizes=[5]", "seed=9"],  # a key given twice: composed by Hydra
]
MASTER = ["hydra/launcher=fused", "hydra.job.config.override_dirname.exclude_keys=[seed]"]


@pytest.fixture(scope="module")
def loader():
    register_experiments()
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        yield GlobalHydra.instance().config_loader()


def _master(loader):
    return loader.load_configuration(config_name="train", overrides=MASTER, run_mode=RunMode.MULTIRUN)


def test_every_job_is_the_config_hydra_composes_and_each_shape_is_composed_once(loader, monkeypatch) -> None:
    master = _master(loader)
    expected = [loader.load_sweep_config(master, job) for job in JOBS]
    composed: list[list[str]] = []
    compose = loader.load_sweep_config
    monkeypatch.setattr(loader, "load_sweep_config", lambda m, job: composed.append(job) or compose(m, job))
    fast = shape_composer(loader)
    got = [fast(master, job) for job in JOBS]
    for job, want, have in zip(JOBS, expected, got):
        assert OmegaConf.to_yaml(have) == OmegaConf.to_yaml(want), job
        assert OmegaConf.is_struct(have) and not OmegaConf.is_readonly(have.hydra)
    assert have.hydra.job.override_dirname == want.hydra.job.override_dirname != ""
    assert got[1].hydra.overrides.task == JOBS[1] and got[1].hydra.job.override_dirname == "data.batch_size=64,optimizer.lr=0.003"
    # Hydra composed the first of each shape, and the jobs it cannot copy.
    assert composed == [JOBS[i] for i in (0, 3, 5, 8, 9, 10, 12, 15, 16)]
    got[1].optimizer.lr = 99.0  # a job's config is its own
    assert fast(master, JOBS[1]).optimizer.lr == 0.003


def test_a_bad_value_fails_as_hydra_fails(loader) -> None:
    master = _master(loader)
    fast = shape_composer(loader)
    fast(master, ["optimizer.lr=0.1", "trainer.max_epochs=2"])
    for job in (["optimizer.lr=0.1", "trainer.max_epochs=2", "optimizer.no_such_key=1"], ["optimizer.lr=0.1", "trainer.max_epochs=[1"]):
        with pytest.raises(Exception) as by_hydra:
            loader.load_sweep_config(master, job)
        with pytest.raises(type(by_hydra.value)):
            fast(master, job)
    with pytest.raises(ConfigCompositionException):
        fast(master, ["optimizer.lr=0.1", "trainer.no_such_key=2"])


def test_the_launcher_knows_the_first_batchs_size_before_the_sweeper_composes_it(loader) -> None:
    """n_jobs=auto starts the process workers are forked from at set-up only where the first batch
    may get workers: the grid's size (at most max_batch_size) or Optuna's n_jobs, read from the overrides."""
    from types import SimpleNamespace

    from hydra_plugins.sweeplab_fused.fused_launcher import _first_batch, _may_want_workers

    context = SimpleNamespace(config_loader=loader)

    def master(*overrides: str):
        return loader.load_configuration(config_name="train", overrides=[*MASTER, *overrides], run_mode=RunMode.MULTIRUN)

    grid = ["optimizer.lr=0.001,0.003,0.01", "data.batch_size=32,64"]
    assert _first_batch(master(*grid, "seed=range(1,9)"), context) == 48
    assert _first_batch(master(*grid, "seed=1,2", "trainer.max_epochs=3"), context) == 12
    assert _first_batch(master(*grid, "seed=range(1,9)", "hydra.sweeper.max_batch_size=10"), context) == 10
    assert _first_batch(master("hydra/sweeper=optuna", "hydra.sweeper.n_jobs=5"), context) == 5
    assert _may_want_workers(master(*grid, "seed=range(1,9)"), context, cores=2)
    assert _may_want_workers(master(*grid, "seed=1,2"), context, cores=2)
    assert not _may_want_workers(master("optimizer.lr=0.001,0.003,0.01", "data.batch_size=32,64"), context, cores=2)  # 6 jobs: this process
    assert not _may_want_workers(master(*grid, "seed=range(1,9)"), context, cores=1)
    assert not _may_want_workers(master(*grid, "seed=range(1,9)", "trainer.accelerator=gpu"), context, cores=2)


def test_a_fused_multirun_starts_its_workers_zygote_before_hydra_sets_the_launcher_up(loader, monkeypatch) -> None:
    """hydra.callbacks.fused_workers starts the process workers are forked from as the multirun starts,
    where the launcher will want workers, and hands it to the launcher's set-up."""
    from hydra_plugins.sweeplab_fused import fused_launcher, worker

    started: list[int] = []
    monkeypatch.setattr(worker, "Zygote", lambda n_jobs: started.append(n_jobs) or f"zygote for {n_jobs}")
    monkeypatch.setattr(fused_launcher, "_usable_cores", lambda: 2)
    grid = ["optimizer.lr=0.001,0.003,0.01", "data.batch_size=32,64"]

    def start(*overrides: str) -> str | None:
        config = loader.load_configuration(config_name="train", overrides=[*MASTER, *overrides], run_mode=RunMode.MULTIRUN)
        assert "StartWorkersEarly" in config.hydra.callbacks.fused_workers._target_
        fused_launcher.StartWorkersEarly().on_multirun_start(config)
        return fused_launcher._started_early.pop("zygote", None)

    assert start(*grid, "seed=range(1,9)") == "zygote for 2"  # auto, 48 jobs on 2 cores
    assert start(*grid) is None  # auto, 6 jobs: the launcher's own process
    assert start(*grid, "hydra.launcher.n_jobs=3") == "zygote for 3"
    assert start(*grid, "hydra.launcher.n_jobs=1") is None
    assert start(*grid, "seed=range(1,9)", "hydra/launcher=basic") is None
    assert started == [2, 3]

"""``hydra/sweeper=optuna`` on optuna 5: shared, resumable studies, pruning, many objectives.

Hydra imports every module under ``hydra_plugins`` when it starts, so this one
imports nothing heavy: optuna and the search itself (``sweeplab.sweeps.optuna``)
load only when a sweep runs.
"""

# No `from __future__ import annotations`: Hydra's scan runs this module before it is in
# sys.modules, where dataclasses would look its string annotations up.
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.sweeplab_optuna.optuna_sweeper.OptunaSweeper"
    sampler: Any = "tpe"  # tpe | random | cmaes | nsga2 | grid, or {_target_: optuna.samplers..., ...}
    seed: Any = None
    direction: Any = "maximize"  # maximize | minimize, one per optimized_metric
    directions: Any = None  # [maximize, minimize]: several objectives (optimized_metric: [val/f1, time/fit_s])
    study_name: Any = "${experiment_name}"
    storage: Any = None  # null: sqlite:///<sweep folder>/optuna.db; a shared URL resumes and shares the study
    n_trials: int = 20  # over the whole study, whichever sweeps run its trials
    n_jobs: int = 1  # trials asked and launched together (the launcher runs them in parallel)
    pruner: str = "none"  # none | median | hyperband; a trial reports optimized_metric after each validation
    n_startup_trials: int = 2  # median: no pruning until this many trials have finished
    n_warmup_steps: int = 1  # median: nor in a trial's first epochs
    min_resource: int = 1  # hyperband: epochs of the smallest bracket
    reduction_factor: int = 3  # hyperband
    heartbeat_interval: int = 10  # seconds; a trial whose sweeper stopped beating for grace_period is asked again
    grace_period: int = 60
    params: Any = None  # {key: "choice(...)" | "range(...)" | "interval(...)" | "tag(log, interval(...))"}


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="sweeplab")


class OptunaSweeper(Sweeper):
    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from sweeplab.sweeps.optuna import run_study

        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        run_study(self, arguments, sweep_dir)

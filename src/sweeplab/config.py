"""Config search path, experiment presets, composition outside the CLI, validation.

Configs ship inside the package (conf/ is ``sweeplab.conf``), so an
installed wheel finds them through ``pkg://sweeplab.conf``. Experiment
presets live in the top-level experiments/ folder (``sweeplab.experiments``)
and are registered as the Hydra group ``experiment``, selected with
``experiment=<name>``. A user's own folder joins the search path with
``hydra.searchpath=[file:///path/to/conf]`` (its ``experiment/*.yaml`` too).
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sweeplab.redact import redact_uri

CONFIG_MODULE = "sweeplab.conf"
CONFIG_PATH = "pkg://sweeplab.conf"
_registered = False
LOG_CHECKPOINTS = ("best", "last", "all", "none")  # logger.log_checkpoints: which checkpoints become artifacts


def _required(what: str) -> Any:
    raise ValueError(f"{what} is required here; add it to the command line")


# `key: ${required:'model.weights=/path/to.pth'}` in a preset: a value the user
# must give. (A plain ??? does not work there: merging ??? over a group's
# default keeps the default.)
if not OmegaConf.has_resolver("required"):
    OmegaConf.register_new_resolver("required", _required)


def register_experiments() -> list[str]:
    """Put every experiments/*.yaml in Hydra's ``experiment`` group (global package),
    and sweeplab's ``hydra/sweeper=optuna`` and ``hydra/launcher=fused``: Hydra's plugin scan
    finds them in an installed wheel, but cannot list modules through an editable install's finder."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.sweeplab_fused.fused_launcher import FusedLauncher  # its module stores hydra/launcher/fused
    from hydra_plugins.sweeplab_optuna.optuna_sweeper import OptunaSweeper  # its module stores hydra/sweeper/optuna

    Plugins.instance().register(OptunaSweeper)
    Plugins.instance().register(FusedLauncher)
    global _registered
    names = []
    store = ConfigStore.instance()
    for entry in sorted(resources.files("sweeplab.experiments").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            name = entry.name[: -len(".yaml")]
            names.append(name)
            if not _registered:
                store.store(group="experiment", name=name, node=OmegaConf.create(entry.read_text()), package="_global_")
    _registered = True
    return names


def compose(overrides: list[str] | None = None, run_dir: str | Path | None = None) -> DictConfig:
    """The config `sweeplab-train` would run with, for tests, notebooks and sweeplab-eval."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_experiments()
    overrides = list(overrides or [])
    if run_dir is not None:
        overrides.append(f"paths.run_dir={Path(run_dir)}")
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def _positive_number(key: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value) or value <= 0:
        what = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"{key}={value!r}: must be {what}")


def _number_in(key: str, value: Any, low: float, high: float, closed_low: bool = True, closed_high: bool = False) -> None:
    """``value`` must be a number in the interval (brackets say which ends are allowed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= low if closed_low else value > low) and (value <= high if closed_high else value < high)
    if not ok:
        interval = f"{'[' if closed_low else '('}{low:g}, {high:g}{']' if closed_high else ')'}"
        raise ValueError(f"{key}={value!r}: must be a number in {interval}")


SEED_MAX = 2**32 - 1  # numpy's seed range
# Optimizer settings torch checks only once training has started.
OPTIMIZER_RANGES = {
    "momentum": (0.0, math.inf, True),
    "weight_decay": (0.0, math.inf, True),
    "dampening": (0.0, math.inf, True),
    "alpha": (0.0, math.inf, True),
    "rho": (0.0, 1.0, True),
    "eps": (0.0, math.inf, False),
}


# MLflow's SQL stores keep names in VARCHAR(256) and (250): PostgreSQL and MySQL refuse a longer one
# when the run starts, SQLite keeps it; either way the same name must work on every store.
NAME_LENGTHS = {"experiment_name": 256, "run_name": 250}


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would otherwise fail late or train silently wrong."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed={seed!r}: must be an integer from 0 to {SEED_MAX}")
    optimizer = cfg.get("optimizer") or {}  # an RL run with a Q-table has none
    if "lr" in optimizer:
        _positive_number("optimizer.lr", optimizer.lr)
    for key, (low, high, closed_low) in OPTIMIZER_RANGES.items():
        if optimizer.get(key) is not None:
            _number_in(f"optimizer.{key}", optimizer[key], low, high, closed_low=closed_low)
    for i, beta in enumerate(optimizer.get("betas") or []):
        _number_in(f"optimizer.betas[{i}]", beta, 0.0, 1.0)
    data = cfg.get("data") or {}
    if "batch_size" in data:
        _positive_number("data.batch_size", data.batch_size, integer=True)
    for key in ("val_fraction", "test_fraction"):
        if data.get(key) is not None:
            _number_in(f"data.{key}", data[key], 0.0, 1.0, closed_low=False)
    logger = cfg.get("logger") or {}
    if logger.get("system_metrics") and "system_metrics_every" in logger:
        _positive_number("logger.system_metrics_every", logger.system_metrics_every)

    if "log_checkpoints" in logger and str(logger.log_checkpoints) not in LOG_CHECKPOINTS:
        raise ValueError(f"logger.log_checkpoints={logger.log_checkpoints!r}: choose one of {', '.join(LOG_CHECKPOINTS)}")
    if "log_model" in logger and not isinstance(logger.log_model, bool):
        raise ValueError(f"logger.log_model={logger.log_model!r}: choose true or false")
    trainer = cfg.get("trainer") or {}
    if "max_epochs" in trainer and trainer.max_epochs is not None and trainer.max_epochs != -1:
        _positive_number("trainer.max_epochs", trainer.max_epochs, integer=True)
    if trainer.get("max_epochs") == -1 and not _bounded(cfg):
        # Lightning reads -1 as "no limit": nothing would ever end the run.
        raise ValueError(
            "trainer.max_epochs=-1: trains without end unless something stops it; add +trainer.max_time=00:01:00:00 "
            "(DD:HH:MM:SS) or early stopping (callbacks=early_stopping), or give a number of epochs"
        )
    name = cfg.get("experiment_name", "sweeplab")
    if name is not None and not str(name).strip():
        raise ValueError("experiment_name='': an MLflow experiment needs a name; give one (experiment_name=my_runs) or leave the default")
    for key, longest in NAME_LENGTHS.items():
        value = cfg.get(key)
        if value is not None and len(str(value)) > longest:
            raise ValueError(
                f"{key}={str(value)[:20]!r}... is {len(str(value))} characters: MLflow keeps {longest} at most; give a shorter one"
            )
    accelerators = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
    if "accelerator" in trainer and str(trainer.accelerator) not in accelerators:
        raise ValueError(f"trainer.accelerator={trainer.accelerator!r}: choose one of {', '.join(accelerators)}")
    if cfg.get("monitor_mode", "min") not in ("min", "max"):
        raise ValueError(f"monitor_mode={cfg.monitor_mode!r}: choose min or max")
    _check_scheduler(cfg.get("scheduler") or {})
    for i, group in enumerate(cfg.get("param_groups") or []):
        pattern = group.get("params") if isinstance(group, DictConfig) else None
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"param_groups[{i}]={group!r}: needs params, a regular expression on parameter names")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"param_groups[{i}].params={pattern!r}: not a valid regular expression ({exc})") from None
    uri = (cfg.get("logger") or {}).get("tracking_uri")
    if uri:
        check_scheme(str(uri), "logger.tracking_uri=")


def _bounded(cfg: DictConfig) -> bool:
    """Whether something ends a run whose epochs are unlimited: a time limit, a step limit or early stopping."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("max_time") or (trainer.get("max_steps") or -1) > 0:
        return True
    return any(c and "EarlyStopping" in str(c.get("_target_", "")) for c in (cfg.get("callbacks") or {}).values())


def _check_scheduler(scheduler: Any) -> None:
    if scheduler.get("interval", "epoch") not in ("epoch", "step"):
        raise ValueError(f"scheduler.interval={scheduler.interval!r}: choose epoch or step")
    for key in ("step_size", "T_max", "frequency"):
        if scheduler.get(key) is not None:
            _positive_number(f"scheduler.{key}", scheduler[key], integer=True)
    if scheduler.get("gamma") is not None:
        _number_in("scheduler.gamma", scheduler.gamma, 0.0, math.inf, closed_low=False)
    if scheduler.get("factor") is not None:
        _number_in("scheduler.factor", scheduler.factor, 0.0, 1.0, closed_low=False)
    milestones = scheduler.get("milestones")
    if milestones is not None:
        values = list(milestones)
        if not values or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in values) or values != sorted(set(values)):
            raise ValueError(f"scheduler.milestones={values!r}: must be increasing positive integers (epochs), e.g. [5, 8]")


def check_choices(choices: dict[str, Any]) -> None:
    """An optional group (experiment, hparams_search) set to a name that does not exist
    is silently dropped by Hydra: refuse it, listing what exists."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    for group in ("experiment", "hparams_search", "debug", "text_model"):
        chosen = choices.get(group)
        if chosen is not None and chosen not in (options := loader.get_group_options(group)):
            raise ValueError(f"{group}={chosen}: no such preset; choose one of {', '.join(options)}")


def available_accelerators() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append(f"gpu ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


# What Lightning's Trainer takes as precision (lightning.fabric.plugins.precision.precision:
# _PRECISION_INPUT_STR and _PRECISION_INPUT_STR_ALIAS), checked here so a typo is refused before
# Lightning is imported; tests/test_cli.py checks these against Lightning's own lists.
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine", "transformer-engine-float16")
PRECISION_ALIASES = ("32", "16", "bf16", "64")


def check_accelerator(cfg: DictConfig) -> None:
    """Fail at once, naming what this machine has, when the asked-for device is missing."""
    import torch

    wanted = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    missing = (
        wanted in ("gpu", "cuda")
        and not torch.cuda.is_available()
        or wanted == "mps"
        and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    )
    if missing:
        raise ValueError(
            f"trainer.accelerator={wanted}: this machine has none; available here: "
            f"{', '.join(available_accelerators())} (use trainer.accelerator=cpu or auto)"
        )
    on_cpu = wanted == "cpu" or wanted == "auto" and not torch.cuda.is_available()
    devices = (cfg.get("trainer") or {}).get("devices", 1)
    count = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else devices
    strategy = str((cfg.get("trainer") or {}).get("strategy") or "auto")
    if on_cpu and isinstance(count, int) and count > 1 and strategy == "auto":
        raise ValueError(
            f"trainer.devices={devices}: on the CPU that means {count} training processes (DDP); ask for it with "
            f"trainer=ddp trainer.accelerator=cpu trainer.devices={count}, or keep trainer.devices=1"
        )
    precision = str((cfg.get("trainer") or {}).get("precision", "32-true"))
    if precision not in PRECISIONS and precision not in PRECISION_ALIASES and precision != "None":
        raise ValueError(
            f"trainer.precision={precision!r}: not a precision Lightning knows; choose one of {', '.join(PRECISIONS)} "
            f"(or the short forms {', '.join(PRECISION_ALIASES)})"
        )
    if on_cpu and precision in ("16-mixed", "16", "16-true"):
        raise ValueError(
            f"trainer.precision={precision}: the CPU has no float16 mixed precision; use bf16-mixed, 32-true or 64-true (or a GPU)"
        )


# -- what the command line chose (empty outside the CLI: tests, notebooks) -------


def overrides() -> list[str]:
    """The command-line overrides of this job, as typed."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def choices() -> dict[str, str]:
    """The option picked in each config group (optimizer: sgd), whether on the command
    line or by a preset."""
    from hydra.core.hydra_config import HydraConfig

    try:
        chosen = HydraConfig.get().runtime.choices
    except ValueError:
        return {}
    return {str(g): str(o) for g, o in chosen.items() if o is not None and not str(g).startswith("hydra/")}


def choice(group: str, fallback: Any) -> str:
    """The option chosen for ``group`` (e.g. q_learning); outside the CLI, ``fallback``'s last dotted part."""
    return choices().get(group) or str(fallback).rsplit(".", 1)[-1]


def model_choice(cfg: DictConfig) -> str:
    """The conf/model option name (e.g. knn), or the class name outside the CLI."""
    return choice("model", cfg.model._target_)


TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "file", "databricks", "databricks-uc")


def check_scheme(uri: str, key: str) -> None:
    """Refuse a tracking URI whose scheme MLflow has no store for, in one line naming it (``key`` + the URI)."""
    if "://" in uri and uri.split(":", 1)[0].split("+", 1)[0] not in TRACKING_SCHEMES:
        raise ValueError(
            f"{key}{redact_uri(uri)}: unknown scheme; use sqlite:///path/mlflow.db, http(s)://host:port, "
            "postgresql://... or mysql://... (an MLflow server or database)"
        )

"""Config search path, experiment presets, composition outside the CLI, validation.

Configs ship inside the package (conf/ is ``sweeplab.conf``), so an
installed wheel finds them through ``pkg://sweeplab.conf``. Experiment
presets live in the top-level experiments/ folder (``sweeplab.experiments``)
and are registered as the Hydra group ``experiment``, selected with
``experiment=<name>``. A user's own folder joins the search path with
``hydra.searchpath=[file:///path/to/conf]`` (its ``experiment/*.yaml`` too).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

CONFIG_MODULE = "sweeplab.conf"
CONFIG_PATH = "pkg://sweeplab.conf"
_registered = False


def _required(what: str) -> Any:
    raise ValueError(f"{what} is required here; add it to the command line")


# `key: ${required:'model.weights=/path/to.pth'}` in a preset: a value the user
# must give. (A plain ??? does not work there: merging ??? over a group's
# default keeps the default.)
if not OmegaConf.has_resolver("required"):
    OmegaConf.register_new_resolver("required", _required)


def register_experiments() -> list[str]:
    """Put every experiments/*.yaml in Hydra's ``experiment`` group (global package)."""
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


def _positive_number(cfg: DictConfig, key: str, value: Any, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        what = "a positive integer" if integer else "a number > 0"
        raise ValueError(f"{key}={value!r}: must be {what}")


def check_config(cfg: DictConfig) -> None:
    """Refuse values that would otherwise fail late or train silently wrong."""
    if "lr" in cfg.optimizer:
        _positive_number(cfg, "optimizer.lr", cfg.optimizer.lr)
    if "batch_size" in cfg.data:
        _positive_number(cfg, "data.batch_size", cfg.data.batch_size, integer=True)
    trainer = cfg.get("trainer") or {}
    if "max_epochs" in trainer and trainer.max_epochs is not None and trainer.max_epochs != -1:
        _positive_number(cfg, "trainer.max_epochs", trainer.max_epochs, integer=True)
    accelerators = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
    if "accelerator" in trainer and str(trainer.accelerator) not in accelerators:
        raise ValueError(f"trainer.accelerator={trainer.accelerator!r}: choose one of {', '.join(accelerators)}")
    if cfg.monitor_mode not in ("min", "max"):
        raise ValueError(f"monitor_mode={cfg.monitor_mode!r}: choose min or max")
    scheduler = cfg.get("scheduler") or {}
    if scheduler.get("interval", "epoch") not in ("epoch", "step"):
        raise ValueError(f"scheduler.interval={scheduler.interval!r}: choose epoch or step")


def available_accelerators() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append(f"gpu ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_accelerator(cfg: DictConfig) -> None:
    """Fail at once, naming what this machine has, when the asked-for device is missing."""
    import torch

    wanted = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    missing = (
        wanted in ("gpu", "cuda") and not torch.cuda.is_available()
        or wanted == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    )
    if missing:
        raise ValueError(
            f"trainer.accelerator={wanted}: this machine has none; available here: "
            f"{', '.join(available_accelerators())} (use trainer.accelerator=cpu or auto)"
        )
    on_cpu = wanted == "cpu" or wanted == "auto" and not torch.cuda.is_available()
    precision = str((cfg.get("trainer") or {}).get("precision", "32-true"))
    if on_cpu and precision in ("16-mixed", "16", "16-true"):
        raise ValueError(
            f"trainer.precision={precision}: the CPU has no float16 mixed precision; "
            "use bf16-mixed, 32-true or 64-true (or a GPU)"
        )

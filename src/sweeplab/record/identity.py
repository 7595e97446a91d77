"""A run's identity: the hash of what it computes (equal hashes, equal results), which
``skip_finished`` and ``resume=auto`` find runs by, and the class paths an earlier
version wrote into configs (a saved ``config.yaml`` still loads; an old run keeps
its identity)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

# Where a run writes, what it is called and how it starts are not what it computes.
NOT_HASHED = ("run_name", "tags", "paths", "logger", "experiment_name", "skip_finished", "resume", "print_config")


# Where classes named by ``_target_`` lived before the package was laid out by what a
# run goes through (sweeplab 0.1.0's config.yaml files name the left side).
MOVED_TARGETS = {
    "sweeplab.callbacks.": "sweeplab.families.torch.callbacks.",
    "sweeplab.optim.": "sweeplab.families.torch.optim.",
    "sweeplab.schedules.": "sweeplab.families.torch.schedules.",
    "sweeplab.sweeps.SweepCallback": "sweeplab.sweeps.callback.SweepCallback",
}


def retarget(plain: Any, moves: dict[str, str]) -> Any:
    """``plain`` (containers, changed in place) with each ``_target_`` that starts with a key
    of ``moves`` starting with its value instead."""
    if isinstance(plain, dict):
        target = plain.get("_target_")
        old = next((o for o in moves if isinstance(target, str) and target.startswith(o)), None)
        if old:
            plain["_target_"] = moves[old] + target[len(old) :]
    for item in plain.values() if isinstance(plain, dict) else plain if isinstance(plain, list) else []:
        retarget(item, moves)
    return plain


def upgrade_targets(cfg: DictConfig) -> DictConfig:
    """A saved config with every ``_target_`` an earlier version wrote pointing where that class is now."""
    return OmegaConf.create(retarget(OmegaConf.to_container(cfg, resolve=False), MOVED_TARGETS))


def targets_as_first_named(plain: Any) -> Any:
    """The inverse, for a run's identity (``config_hash``): where a class lives in the
    package is not what a run computes, and runs recorded before the move must keep
    their identity (``skip_finished``, ``resume=auto``)."""
    return retarget(plain, {new: old for old, new in MOVED_TARGETS.items()})


def config_hash(cfg: DictConfig) -> str:
    """Identity of what a run computes: equal hashes, equal results.

    Where a run writes (paths.*, and what interpolates them, such as the
    checkpoint folder) is not part of what it computes.
    """
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.paths = {"outputs": "<outputs>", "run_dir": "<run_dir>"}
    plain = OmegaConf.to_container(cfg, resolve=True)
    container = targets_as_first_named({k: v for k, v in plain.items() if k not in NOT_HASHED})
    return hashlib.sha256(json.dumps(container, sort_keys=True, default=str).encode()).hexdigest()[:16]

"""The tags a run carries that other parts read back (sweeps, Optuna, compare), and
the command line in ``sweeplab.overrides`` read back: split, parsed, replayed.

Low in the layout on purpose: a sweep writes these names and a report reads them,
and neither may import the other to learn them.
"""

from __future__ import annotations

import shlex
from typing import Any

OVERRIDES = "sweeplab.overrides"  # the command-line overrides, secrets masked, shlex-joined
SWEEP_ID = "sweeplab.sweep_id"  # the sweep that trained the run
SWEEPS = "sweeplab.sweeps"  # space-separated ids of every sweep a run belongs to (reused runs join later ones)
TRIAL = "sweeplab.optuna.trial"  # the trial number(s) a run answered, space-separated when a config was asked again
STUDY = "sweeplab.optuna.study"
PRUNED = "sweeplab.pruned"
KIND = "sweeplab.kind"  # "sweep" on a sweep's own run (sweeps.parent), the parent of its jobs' runs
PRUNED_EPOCH = "sweeplab.pruned_epoch"  # also the optuna trial's user attribute: the epoch its pruner stopped it


def split_overrides(tag: Any) -> list[str]:
    """The overrides in the tag ``sweeplab.overrides`` (written with shlex.join, so an
    override with a space, such as experiment_name='my runs', stays one)."""
    text = str(tag or "")
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote in a tag written before shlex.join
        return text.split()


def reproduce_command(run: Any) -> str:
    """The command line that trains this one run again: its overrides, and for a
    job of a sweep (a multirun preset, an Optuna search) hydra.mode=RUN, so the
    command trains this config instead of re-entering the sweep."""
    overrides = split_overrides(run.get(f"tags.{OVERRIDES}"))
    if run.get(f"tags.{SWEEP_ID}"):
        overrides.append("hydra.mode=RUN")
    return " ".join(["sweeplab-train", *(shlex.quote(o) for o in overrides)])


def parse_overrides(runs: Any) -> list[dict[str, str]]:
    """Each run's command-line overrides as {key: value} (from the tag sweeplab.overrides),
    without those that say where a run lands or how it starts."""
    hidden = ("paths.", "hydra.", "logger.tracking_uri", "resume", "skip_finished")
    parsed = []
    for text in runs.get(f"tags.{OVERRIDES}", [""] * len(runs)).fillna(""):
        pairs = (item.split("=", 1) for item in split_overrides(text) if "=" in item)
        parsed.append({k.lstrip("+~"): v for k, v in pairs if not k.lstrip("+~").startswith(hidden)})
    return parsed


def is_sweep_run(runs: Any) -> Any:
    """Which rows of ``mlflow.search_runs`` are sweeps' own runs (a boolean Series): they hold
    a sweep's summary, not a config, and no comparison counts them."""
    import pandas as pd

    column = f"tags.{KIND}"
    return runs[column].eq("sweep") if column in runs.columns else pd.Series(False, index=runs.index)

"""Where a run came from: code version, command, software, device, data split.

Tags on every new MLflow run: MLflow's own ``mlflow.source.git.commit`` and
``mlflow.source.git.branch`` (the UI shows them), ``sweeplab.git_dirty``
(with the uncommitted diff as the artifact ``git_diff.patch``), the command
line as typed (secrets masked), Python/torch/Lightning versions; once the run
is set up, the device it trains on and a fingerprint of its data split (equal
fingerprints: the same samples in train, val and test).
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_root() -> Path | None:
    """The repository of the working directory, else of the sweeplab source (an editable checkout)."""
    for where in (Path.cwd(), Path(__file__).resolve().parent):
        top = _git("rev-parse", "--show-toplevel", cwd=where)
        if top:
            return Path(top.strip())
    return None


def creation_tags(command: list[str]) -> dict[str, str]:
    import lightning
    import torch

    tags = {
        "sweeplab.command": " ".join(command),
        "sweeplab.python": platform.python_version(),
        "sweeplab.torch": torch.__version__,
        "sweeplab.lightning": lightning.__version__,
    }
    root = git_root()
    commit = _git("rev-parse", "HEAD", cwd=root) if root else None
    if root and commit:
        tags["mlflow.source.git.commit"] = commit.strip()
        tags["mlflow.source.git.branch"] = (_git("rev-parse", "--abbrev-ref", "HEAD", cwd=root) or "").strip()
        tags["sweeplab.git_dirty"] = str(bool((_git("status", "--porcelain", "--untracked-files=no", cwd=root) or "").strip())).lower()
    return tags


def write_diff(run_dir: Path) -> Path | None:
    """The uncommitted changes of tracked files, when there are any."""
    root = git_root()
    diff = _git("diff", "HEAD", cwd=root) if root else None
    if not diff:
        return None
    path = run_dir / "git_diff.patch"
    path.write_text(diff)
    return path


def split_fingerprint(datamodule: Any) -> str | None:
    """Hash of the sample ids in each split; None without a data module (RL)."""
    ids = getattr(datamodule, "ids", None)
    if not ids:
        return None
    digest = hashlib.sha256()
    for split in sorted(ids):
        digest.update(split.encode())
        digest.update("\n".join(map(str, ids[split])).encode())
    return digest.hexdigest()[:16]


def setup_tags(family: Any) -> dict[str, str]:
    trainer = getattr(family, "trainer", None)
    device = str(trainer.strategy.root_device) if trainer is not None else "cpu"
    tags = {"sweeplab.device": device}
    fingerprint = split_fingerprint(getattr(family, "datamodule", None))
    if fingerprint:
        tags["sweeplab.data_split"] = fingerprint
    return tags


def command_line() -> list[str]:
    from sweeplab.tracking import mask_override

    return [Path(sys.argv[0]).name, *(mask_override(a) for a in sys.argv[1:])]

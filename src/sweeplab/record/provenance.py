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


_roots: dict[Path, Path | None] = {}  # working directory -> its repository, looked up once a process


def git_root() -> Path | None:
    """The repository of the working directory, else of the sweeplab source (an editable checkout).

    Asked once a folder per process: a process that runs many jobs (a fused group, the basic
    launcher's jobs one after another) asked git for it twice a job."""
    cwd = Path.cwd()
    if cwd not in _roots:
        tops = (_git("rev-parse", "--show-toplevel", cwd=where) for where in (cwd, Path(__file__).resolve().parent))
        _roots[cwd] = next((Path(top.strip()) for top in tops if top), None)
    return _roots[cwd]


GitState = tuple[list[str], str, str | None]  # commit and branch, ``git status`` of tracked files, the diff
_states: dict[tuple[Path, str], GitState] = {}  # (repository, sweep) -> git_state()


def git_state(sweep: str | None) -> GitState | None:
    """The repository's commit and branch, its ``git status`` of tracked files, and its diff
    (None outside a repository); a run reads it once, for its tags and its diff.

    Read once a sweep and process: a process runs the code it imported, so every job of a sweep
    in it (a fused group, the basic launcher's jobs one after another) ran what the first job's
    state describes, and three git processes a job, forked from a process of 1 GB, were 15 ms of
    each fused job's set-up. A single run (``sweep`` None) reads it anew: a notebook that edits
    and reloads its code between runs gets each run's own."""
    root = git_root()
    if root is None:
        return None
    if sweep is not None and (root, sweep) in _states:
        return _states[root, sweep]
    head = (_git("rev-parse", "HEAD", "--abbrev-ref", "HEAD", cwd=root) or "").split()
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=root) or ""
    state = head, status, _git("diff", "HEAD", cwd=root) if status.strip() else None
    if sweep is not None:
        _states[root, sweep] = state
    return state


def creation_tags(command: list[str], git: GitState | None) -> dict[str, str]:
    from importlib.metadata import version

    # The versions the run imported (torch's build: 2.14.1+cu130), else installed (a classical run imports neither)
    torch, lightning = sys.modules.get("torch"), sys.modules.get("lightning")
    tags = {
        "sweeplab.command": " ".join(command),
        "sweeplab.python": platform.python_version(),
        "sweeplab.torch": torch.__version__ if torch is not None else version("torch"),
        "sweeplab.lightning": lightning.__version__ if lightning is not None else version("lightning"),
    }
    if git is not None and len(git[0]) == 2:  # the commit, and the branch (HEAD when detached)
        tags["mlflow.source.git.commit"], tags["mlflow.source.git.branch"] = git[0]
        tags["sweeplab.git_dirty"] = str(bool(git[1].strip())).lower()
    return tags


def write_diff(run_dir: Path, git: GitState | None) -> Path | None:
    """The uncommitted changes of tracked files, when there are any."""
    diff = git[2] if git is not None else None
    if not diff:
        return None
    path = run_dir / "git_diff.patch"
    path.write_text(diff)
    return path


def _fingerprint(ids: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for split in sorted(ids):
        digest.update(split.encode())
        digest.update("\n".join(map(str, ids[split])).encode())
    return digest.hexdigest()[:16]


def split_fingerprint(datamodule: Any) -> str | None:
    """Hash of the sample ids in each split; None without a data module (RL)."""
    ids = getattr(datamodule, "ids", None)
    return _fingerprint(ids) if ids else None


def setup_tags(family: Any) -> dict[str, str]:
    trainer = getattr(family, "trainer", None)
    device = str(trainer.strategy.root_device) if trainer is not None else "cpu"
    tags = {"sweeplab.device": device}
    fingerprint = split_fingerprint(getattr(family, "datamodule", None))
    if fingerprint:
        tags["sweeplab.data_split"] = fingerprint
    return tags


def record(client: Any, run_id: str, family: Any, data_name: str, resumed: bool) -> None:
    """Each split as an MLflow dataset input (the UI's "Datasets" column): name
    ``<data>/<split>``, source the user's file or folder (else the data module),
    digest the split's fingerprint, so two runs on the same split show the same
    digest. A resumed run has them already. (The provenance tags, ``setup_tags``,
    go with the run's params.)"""
    datamodule = getattr(family, "datamodule", None)
    if resumed or datamodule is None or not getattr(datamodule, "splits", None):
        return
    import warnings

    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.entities import DatasetInput, InputTag

    from sweeplab.record.tracking import again_on_duplicate_key

    where = getattr(datamodule, "path", None) or getattr(datamodule, "root", None)
    with warnings.catch_warnings():  # a local path matches two registered local-file sources; either is right
        warnings.simplefilter("ignore")
        source = (
            resolve_dataset_source(str(Path(where).resolve()))
            if where
            else CodeDatasetSource({"sweeplab.data": f"{type(datamodule).__module__}.{type(datamodule).__name__}"})
        )
    inputs = []
    for split in ("train", "val", "test"):
        features, targets = datamodule.splits[split][:2]
        dataset = mlflow.data.from_numpy(
            features, targets=targets, source=source, name=f"{data_name}/{split}", digest=_fingerprint({split: datamodule.ids[split]})
        )
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", split)]))
    # Runs of a sweep that start together log the same split: MLflow's look-up-then-insert races.
    again_on_duplicate_key(client.log_inputs, run_id, datasets=inputs)


def command_line() -> list[str]:
    from sweeplab.redact import mask_override

    return [Path(sys.argv[0]).name, *(mask_override(a) for a in sys.argv[1:])]

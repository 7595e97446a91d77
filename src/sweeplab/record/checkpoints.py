"""Checkpoints are written atomically and loaded weights-only: a file that
needs arbitrary unpickling is refused."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any


def atomic_checkpoint_io() -> Any:
    """Lightning's checkpoint writer, made atomic: the checkpoint goes to a
    temporary file beside it, then is renamed, so a full disk or a kill
    mid-write leaves the previous checkpoint whole, never a truncated one under
    the real name. (Built here, not at import: Lightning is slow to import.)"""
    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
            if storage_options is not None:
                raise TypeError(f"storage_options={storage_options!r}: checkpoints are written to local files, which take none")
            # Serialised in memory, then one plain write (Lightning's own writer goes through fsspec: a third of a small
            # save); torch.save to a file would report a full disk as a RuntimeError of its zip writer, not an OSError.
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            _write_atomically(Path(path), lambda partial: partial.write_bytes(buffer.getbuffer()))

        def copy_checkpoint(self, source: Path, path: Path) -> None:
            """``path`` becomes a copy of the checkpoint ``source`` (best and last after an improving epoch are one checkpoint)."""
            _write_atomically(Path(path), lambda partial: shutil.copyfile(source, partial))

    return AtomicCheckpointIO()


def _write_atomically(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
        _mark_owner(path.parent)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(
                exc.errno,
                f"checkpoint {path} could not be written ({exc.strerror or exc}: a full disk?); an earlier checkpoint of that name is left whole",
            ) from None
        raise


def load_checkpoint(path: str | Path, key: str = "ckpt_path", training_state: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint safely (``torch.load(weights_only=True)``) or say why not.

    ``training_state``: the file must be one Lightning can continue training
    from (it wrote it: loops, optimizers), not a bare state dict.
    """
    import torch

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key}={path}: no such file")
    if path.is_dir():
        raise ValueError(f"{key}={path}: is a folder; give the .ckpt file (e.g. <run folder>/checkpoints/last.ckpt)")
    try:
        with warnings.catch_warnings():  # its note on the file's pickle protocol: the refusal below says what matters
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # garbage bytes or a plain pickle, not a checkpoint
            raise ValueError(
                f"{key}={path}: not a checkpoint: torch's weights-only loader cannot read it ({_reason(exc)}); "
                "sweeplab refuses, on purpose, to load it with weights_only=False, which can run code stored in the file"
            ) from None
        detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        raise ValueError(
            f"{key}={path}: refused: it holds pickled objects beyond tensors and plain values, which could run code "
            f"when loaded ({detail or 'weights-only load failed'})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/format errors come in many types
        raise ValueError(f"{key}={path}: not a checkpoint torch can read ({type(exc).__name__}: {_reason(exc)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{key}={path}: not a Lightning checkpoint (no state_dict inside)")
    if training_state and "pytorch-lightning_version" not in checkpoint:
        raise ValueError(
            f"{key}={path}: a bare state dict, not a checkpoint Lightning wrote (no loop or optimizer state to continue "
            "from); to start a zoo model from these weights use model.weights=<file>"
        )
    return checkpoint


def _reason(exc: BaseException) -> str:
    """The informative part of torch's message (what its unpickler met), without its advice
    to load unsafely or to file an issue."""
    text = str(exc)
    after = text.split("Unpickler error:", 1)[1] if "Unpickler error:" in text else text
    advice = ("Please file", "Re-running", "Check the documentation", "Weights only load failed", "In PyTorch")
    lines = [line.strip() for line in after.splitlines() if line.strip() and not line.strip().startswith(advice)]
    return (lines[0] if lines else type(exc).__name__)[:200]


# -- checkpoints in the run's MLflow artifacts (checkpoints/<name>) ---------------

ARTIFACT_DIR = "checkpoints"
RESUMABLE = ("last.ckpt", "interrupted.ckpt")  # what resume continues from, in this order
TESTED = ("best.ckpt", "last.ckpt")  # what sweeplab-eval re-tests, in this order


def to_upload(run_dir: Path, which: str, interrupted: bool = False) -> list[Path]:
    """The checkpoint files ``logger.log_checkpoints`` names (best | last | all | none);
    an interrupted run adds the one resume continues from, so it can be resumed elsewhere."""
    folder = run_dir / "checkpoints"
    names = {"best": ["best.ckpt"], "last": ["last.ckpt"], "all": ["best.ckpt", *RESUMABLE], "none": []}[which]
    if interrupted and which != "none":
        names += [n for n in RESUMABLE if n not in names]
    return [folder / n for n in names if (folder / n).is_file()]


def fetch(client: Any, run_id: str, names: tuple[str, ...], run_dir: Path) -> Path | None:
    """Download the first of ``names`` the run has among its artifacts into
    ``run_dir/checkpoints``; None when it has none of them."""
    try:
        logged = {Path(f.path).name for f in client.list_artifacts(run_id, ARTIFACT_DIR)}
    except Exception:  # noqa: BLE001 - no artifact store reachable: nothing to fetch
        return None
    for name in names:
        if name in logged:
            run_dir.mkdir(parents=True, exist_ok=True)
            return Path(client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{name}", str(run_dir)))
    return None


# -- a run folder's checkpoints belong to the run that wrote them ------------------

OWNER_FILE = ".owner"  # in each checkpoint folder: the MLflow run id (or "untracked") that writes there


def checkpoint_folders(cfg: Any) -> list[Path]:
    """The folders the run's checkpoint callbacks write to (``<run folder>/checkpoints`` by default)."""
    folders = {Path(str(c.dirpath)) for c in (cfg.get("callbacks") or {}).values() if c and c.get("dirpath")}
    return sorted(folders)


def refuse_foreign(cfg: Any, resume_run_id: str | None) -> None:
    """A new run must never start from checkpoints it did not write: Lightning's fit, given
    no checkpoint and an on-exception callback, loads the newest one in the folder
    (``ckpt_path="last"``), and the test then reads the earlier run's best.ckpt. Refused in
    one line, before any run exists, naming the run that owns them; only ``resume``
    continues a run from its own folder."""
    if resume_run_id:
        return
    for folder in checkpoint_folders(cfg):
        found = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        if not found:
            continue
        owner_file = folder / OWNER_FILE
        owner = owner_file.read_text().strip() if owner_file.is_file() else ""
        whose = f"MLflow run {owner}" if owner and owner != "untracked" else "an earlier run"
        continuing = f", or continue that run with resume={owner} if it is unfinished" if owner and owner != "untracked" else ""
        raise ValueError(
            f"run folder {folder.parent}: {folder} holds the checkpoints of {whose} ({', '.join(found)}), which a new run "
            f"would start from; give this run its own folder (another hydra.run.dir), or delete {folder}{continuing}"
        )


# Each claimed folder and the run it belongs to, until that run's first checkpoint lands there:
# by folder, not by process, because a fused sweep's trials are saved from one thread.
_claimed: dict[Path, str] = {}


def claim_folders(cfg: Any, run_id: str | None) -> None:
    """This run's checkpoint folders are marked as its own (``.owner``) when its first checkpoint
    lands there, so a later run in the same folder can name it; a run that writes no
    checkpoint (fast_dev_run, callbacks=none) leaves no folder behind."""
    for folder in checkpoint_folders(cfg):
        _claimed[folder.resolve()] = run_id or "untracked"  # Lightning's callbacks hold the real path


def _mark_owner(folder: Path) -> None:
    owner = _claimed.pop(folder.resolve(), None)
    if owner is not None:
        (folder / OWNER_FILE).write_text(f"{owner}\n")


# -- an epoch's logged values, carried by its checkpoint ----------------------------

EPOCH_POINTS = "sweeplab_epoch_points"


def save_epoch_points(checkpoint: dict[str, Any], trainer: Any) -> None:
    """The epoch's train/val values, learning rate and epoch number, at the step Lightning logs them with."""
    values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "val/")) or k == "lr"}
    if values:
        values["epoch"] = float(trainer.current_epoch)
        # Lightning writes an epoch's values one step back (its counter has moved past the last batch).
        checkpoint[EPOCH_POINTS] = {"step": int(trainer.fit_loop.epoch_loop._batches_that_stepped) - 1, "values": values}


def epoch_points(path: Path) -> tuple[int, dict[str, float]] | None:
    """(step, {key: value}) that a checkpoint carries; None for one written before they were kept."""
    held = load_checkpoint(path, key="resume", training_state=True).get(EPOCH_POINTS)
    return (int(held["step"]), dict(held["values"])) if held else None

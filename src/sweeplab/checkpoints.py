"""Checkpoints are loaded weights-only: a file that needs arbitrary unpickling is refused."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a Lightning checkpoint safely (``torch.load(weights_only=True)``) or say why not."""
    import torch

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{key}={path}: no such file")
    if path.is_dir():
        raise ValueError(f"{key}={path}: is a folder; give the .ckpt file (e.g. <run folder>/checkpoints/last.ckpt)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" not in str(exc):  # garbage bytes, not a pickled object
            raise ValueError(f"{key}={path}: not a checkpoint torch can read ({' '.join(str(exc).split())[:200]})") from None
        detail = next((line.strip() for line in str(exc).splitlines() if "GLOBAL" in line), "")
        raise ValueError(
            f"{key}={path}: refused: it holds pickled objects beyond tensors and plain values, which could run code "
            f"when loaded ({detail or 'weights-only load failed'})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip/format errors come in many types
        raise ValueError(f"{key}={path}: not a checkpoint torch can read ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{key}={path}: not a Lightning checkpoint (no state_dict inside)")
    return checkpoint

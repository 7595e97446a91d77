"""Learning-rate factor functions for LambdaLR (named by _target_ in YAML)."""

from __future__ import annotations


def linear_warmup(epoch: int, warmup_epochs: int = 3) -> float:
    """Factor rising linearly from 1/(warmup+1) to 1 over ``warmup_epochs``, then 1."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / (warmup_epochs + 1))


def inverse_sqrt(epoch: int, warmup_epochs: int = 3) -> float:
    """Linear warm-up, then decay proportional to 1/sqrt(epoch)."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    return (warmup_epochs / max(epoch, 1)) ** 0.5 if warmup_epochs > 0 else 1.0 / (epoch + 1) ** 0.5

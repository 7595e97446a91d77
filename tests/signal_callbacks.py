"""Callbacks that hold a run at a chosen moment so a test can signal it there
(imported by the training subprocess through PYTHONPATH)."""
from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class PauseOnTestStart(Callback):
    """Write ``marker`` when the test stage starts, then wait, so a signal lands during the test."""

    def __init__(self, marker: str, seconds: float = 60.0) -> None:
        self.marker, self.seconds = Path(marker), seconds

    def on_test_start(self, trainer, pl_module) -> None:
        self.marker.write_text("testing")
        time.sleep(self.seconds)

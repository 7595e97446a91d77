"""Data modules. Each declares its task, input shape and number of classes so
models, losses and metrics are built from it and nobody types them twice."""

from sweeplab.data.base import ArrayDataModule, Task

__all__ = ["ArrayDataModule", "Task"]

"""What every family shares: one seeding of every generator, and a quiet Lightning.

Below each family (sklearn's ``_base.py`` role): a family imports from here and
never from another family or from the entry point that picks it.
"""

from __future__ import annotations

import logging
import os
import sys


def seed_everything(seed: int, torch: bool = True) -> None:
    """What ``lightning.pytorch.seed_everything(seed, workers=True)`` does, without importing
    Lightning: Python's, numpy's and (for a family that uses it) torch's generators, and the
    variables Lightning's DataLoader workers and DDP processes read their seeds from."""
    import random

    import numpy as np

    os.environ["PL_GLOBAL_SEED"], os.environ["PL_SEED_WORKERS"] = str(seed), "1"
    random.seed(seed)
    np.random.seed(seed)
    if torch:
        import torch as torch_module

        torch_module.manual_seed(seed)


NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def _gpu_count_from_the_runtime_without_nvml() -> None:
    """Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1: torch then counts GPUs through
    NVIDIA's management library, which keeps forked processes able to start CUDA, and caches no
    answer until CUDA starts. Adam and AdamW ask at every step: where that library is missing
    (no NVIDIA driver, no GPU) each question is a failed dlopen, 45 us a step. There, the CUDA
    runtime's cached answer (1 us) is used instead; there is no GPU a fork could need."""
    import ctypes

    if os.environ.get(NVML_CHECK) != "1" or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ[NVML_CHECK]


def quiet_libraries() -> None:
    """Every family: the libraries' INFO lines would bury the run's own table."""
    # MLflow's SQLite layer logs a full traceback for each failed write before
    # raising it; the raised error is reported in one line (errors.one_line).
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logging.getLogger("gensim").setLevel(logging.WARNING)  # a thousand lines a Word2Vec fit and its benchmarks


def quiet_lightning() -> None:
    """Keep the console to the progress bar and results: Lightning's INFO lines
    (device summary, tips) and two known-harmless warnings add nothing."""
    import warnings

    import lightning.pytorch  # noqa: F401  importing it sets its logger to INFO: import first, then quieten

    _gpu_count_from_the_runtime_without_nvml()  # and its environment variable
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # Lightning's loggers print through a handler of their own and also reach the root's, which
    # Hydra sets up: each DDP rank's "Initializing distributed" came twice.
    for name in ("lightning", "lightning.fabric", "lightning.pytorch"):
        if logging.getLogger(name).handlers:
            logging.getLogger(name).propagate = False
    quiet_libraries()
    warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # On a machine with SLURM's client tools, Lightning suggests srun for every run started by hand.
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")
    # Lightning 2.6 reports its implicit ckpt_path="last" lookup on every fresh fit.
    warnings.filterwarnings("ignore", message=r".*\.fit\(ckpt_path=None\)` was called without a model.*")
    warnings.filterwarnings("ignore", message=".*there is no last checkpoint available.*")
    # model.freeze_backbone=true keeps the backbone in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")

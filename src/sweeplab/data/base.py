"""In-memory array data: seeded stratified split, train-only standardisation.

Regression targets are standardised too (train mean and standard deviation):
networks learn a target of unit scale whatever its units, and every reported
number (metrics, predictions, plots) is converted back to the target's own
units through ``unscale_target``. Each sample keeps an id (its row in the
source table, its file, its time step) from loading to ``test_predictions.csv``.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader


class Task(str, Enum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"
    RECONSTRUCTION = "reconstruction"
    CLUSTERING = "clustering"
    REINFORCEMENT = "reinforcement"  # an agent in an environment (sweeplab.rl), no data set
    EMBEDDING = "embedding"  # word vectors from a corpus, scored on word-similarity and analogy benchmarks

    @property
    def is_classification(self) -> bool:
        return self in (Task.BINARY, Task.MULTICLASS)


class _BatchIndexed:
    """A map-style dataset that also serves a whole batch of positions at once.

    The DataLoader's fetcher calls ``__getitems__`` with each batch the
    batch sampler draws: one tensor gather instead of batch_size
    ``__getitem__`` calls and a collate (on small in-memory tables that
    per-sample overhead dominates the epoch time). Being an ordinary
    ``batch_sampler``, Lightning can swap its sampler (overfit_batches, DDP).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        # Indexing with the sampler's list of ints converts it element by element (285 us for
        # 1024 positions); through numpy it is one copy (42 us).
        positions = torch.from_numpy(np.fromiter(idx, dtype=np.int64, count=len(idx)))
        return self.x[positions], self.y[positions]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The collate of a batch ``__getitems__`` already built (module level: workers pickle it)."""
    return batch


def batch_order(loader: Any) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]] | None:
    """``(x, y, positions a batch)`` of an epoch of a loader of this module's (its tensors in
    memory, no workers), drawn as iterating it draws (its random draws from the global
    generator, in the same order); None for any other loader, which must be iterated."""
    dataset = getattr(loader, "dataset", None)
    if not isinstance(dataset, _BatchIndexed) or loader.num_workers or loader.collate_fn is not _as_batch:
        return None
    iterator = iter(loader)  # its draws: the iterator's base seed, then the sampler's seed at its first batch
    batches = getattr(iterator, "_sampler_iter", None)
    if batches is None:
        return None
    return dataset.x, dataset.y, [list(b) for b in batches]


def check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"data.{name}={value}: must be between 0 and 1 (exclusive)")


class ArrayDataModule:
    """Splits (X, y) arrays into train/val/test and serves them as tensors.

    Subclasses implement ``load_arrays`` and set ``task``; everything else
    (split, scaling, loaders, shapes) is shared. A plain class with Lightning's
    data-module interface (``setup``, ``*_dataloader``), handed to Lightning as
    ``sweeplab.families.torch.module.LightningData``: checking the data, or fitting a
    scikit-learn model on it, needs neither Lightning nor torch.
    """

    task: Task = Task.MULTICLASS
    #: feature shape of one sample as models see it, e.g. (64,) or (1, 8, 8)
    sample_shape: tuple[int, ...] | None = None
    class_names: list[str] | None = None
    #: a tabular set's column names: a served model takes a frame with these columns
    feature_names: list[str] | None = None
    #: test samples are in time order (series): reports add a forecast plot
    time_ordered: bool = False
    #: what a sample id is, the column name in test_predictions.csv
    id_name: str = "row"

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 42,
        standardize: bool = True,
        num_workers: int = 0,
        scale_target: bool = True,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size!r}: must be a positive integer")
        check_fraction("val_fraction", val_fraction)
        check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 0.9:
            raise ValueError(
                f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:.2f}: "
                "must leave at least 10% for training (sum < 0.9)"
            )
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.standardize = standardize
        self.num_workers = num_workers
        self.scale_target = scale_target
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.ids: dict[str, np.ndarray] = {}  # per split: each sample's id (see id_name)
        self.feature_scale_: tuple[np.ndarray, np.ndarray] | None = None  # train (mean, std) once standardised
        self.target_scale_: tuple[float, float] | None = None  # regression: train (mean, std) of the target
        self.raw_targets: dict[str, np.ndarray] = {}  # per split, before scaling (exact values for reports)
        self._prepared = False

    # -- what subclasses provide ------------------------------------------------
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load_ids(self, n: int) -> np.ndarray:
        """Ids of the ``n`` samples ``load_arrays`` returns: their row numbers by default."""
        return np.arange(n)

    # -- shapes the model, loss and metrics are built from ---------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(self.splits["train"][0].shape[1:])

    @property
    def num_classes(self) -> int | None:
        if not self.task.is_classification:
            return None
        self.setup()
        return int(max(int(s[1].max()) for s in self.splits.values()) + 1)

    @property
    def num_outputs(self) -> int:
        """Width of the network's last layer for this task."""
        if self.task is Task.MULTICLASS:
            return self.num_classes  # type: ignore[return-value]
        if self.task is Task.RECONSTRUCTION:
            return int(np.prod(self.input_shape))
        return 1

    # -- split and scale -------------------------------------------------------
    def load_splits(self) -> dict[str, tuple[np.ndarray, ...]]:
        """train/val/test as ``(x, y)`` or ``(x, y, ids)``. Default: a seeded random
        split of ``load_arrays``, stratified for classification. Data sets with an
        official test set or a time order override this."""
        from sklearn.model_selection import train_test_split  # lazy: ~1 s import

        x, y = self.load_arrays()
        ids = np.asarray(self.load_ids(len(y)))
        stratify = y if self.task.is_classification else None
        try:
            x_rest, x_test, y_rest, y_test, id_rest, id_test = train_test_split(
                x, y, ids, test_size=self.test_fraction, random_state=self.seed, stratify=stratify
            )
            val_share = self.val_fraction / (1.0 - self.test_fraction)
            stratify = y_rest if self.task.is_classification else None
            x_train, x_val, y_train, y_val, id_train, id_val = train_test_split(
                x_rest, y_rest, id_rest, test_size=val_share, random_state=self.seed, stratify=stratify
            )
        except ValueError as exc:
            if stratify is None:
                raise
            from sweeplab.errors import some_of

            counts = np.bincount(np.asarray(y, dtype=np.int64))
            rare = [self.class_names[i] if self.class_names else str(i) for i in np.flatnonzero((counts > 0) & (counts < 3))]
            raise ValueError(
                f"a stratified train/val/test split needs at least 3 samples of every class; too few of {len(rare)} of the "
                f"{int((counts > 0).sum())} classes: {some_of(rare) or '?'} ({str(exc).split('. ')[0][:160]})"
            ) from None
        return {"train": (x_train, y_train, id_train), "val": (x_val, y_val, id_val), "test": (x_test, y_test, id_test)}

    def setup(self, stage: str | None = None) -> None:
        if self._prepared:
            return
        loaded = self.load_splits()
        self.ids = {k: np.asarray(v[2]) if len(v) > 2 else np.arange(len(v[1])) for k, v in loaded.items()}
        splits = {k: (np.asarray(v[0], dtype=np.float32), v[1]) for k, v in loaded.items()}
        if self.standardize:
            # Statistics of the training split only: nothing leaks from val/test.
            flat = splits["train"][0].reshape(len(splits["train"][0]), -1)
            mean, std = flat.mean(axis=0), flat.std(axis=0)
            std[std == 0] = 1.0  # constant features (blank digit pixels) stay 0
            scale = lambda a: ((a.reshape(len(a), -1) - mean) / std).reshape(a.shape).astype(np.float32)  # noqa: E731
            splits = {k: (scale(x), y) for k, (x, y) in splits.items()}
            self.feature_scale_ = (mean, std)
        if self.sample_shape is not None:
            splits = {k: (x.reshape(-1, *self.sample_shape), y) for k, (x, y) in splits.items()}
        if self.task is Task.REGRESSION and self.scale_target and self.target_scale_ is None:
            self.raw_targets = {k: np.asarray(y) for k, (_, y) in splits.items()}
            y_train = np.asarray(splits["train"][1], dtype=np.float64)
            mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
            splits = {k: (x, ((np.asarray(y, dtype=np.float64) - mean) / std).astype(np.float32)) for k, (x, y) in splits.items()}
            self.target_scale_ = (mean, std)
        self.splits = splits
        self._prepared = True

    def targets(self, split: str) -> np.ndarray:
        """A split's targets in the data's own units, exactly as loaded."""
        self.setup()
        return self.raw_targets.get(split, self.splits[split][1])

    def unscale_target(self, y: np.ndarray) -> np.ndarray:
        """Regression targets or predictions back in the target's own units."""
        if self.target_scale_ is None:
            return np.asarray(y)
        mean, std = self.target_scale_
        return np.asarray(y, dtype=np.float64) * std + mean

    def unstandardize(self, x: np.ndarray) -> np.ndarray:
        """Features back in the data's own units (for pictures of images)."""
        if self.feature_scale_ is None:
            return np.asarray(x)
        mean, std = self.feature_scale_
        return (np.asarray(x).reshape(len(x), -1) * std + mean).reshape(np.shape(x))

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features and targets of one split, as numpy (for scikit-learn models)."""
        self.setup()
        return self.splits[split]

    def _tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        x, y = self.arrays(split)
        target = torch.as_tensor(y, dtype=torch.long if self.task.is_classification else torch.float32)
        return torch.from_numpy(np.ascontiguousarray(x)), target

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

        dataset = _BatchIndexed(*self._tensors(split))
        base = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        batches = BatchSampler(base, batch_size=self.batch_size, drop_last=False)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=_as_batch, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

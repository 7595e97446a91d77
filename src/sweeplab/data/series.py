"""Time series as forecasting data: windows of past values -> a value ahead.

The series is cut in time order (train, then val, then test; never shuffled
across time), scaled with the mean and standard deviation of the training
part only, and turned into samples ``x = series[t - window : t]`` (shape
``(window, 1)``, what a recurrent model reads step by step) with target
``y = series[t + horizon - 1]``. Training batches are drawn in random order
from the training windows; that does not mix periods.
The network learns in these scaled units; metrics, predictions and plots
are converted back to the series' own units (``target_scale_`` holds the
train mean and standard deviation). A sample's id is the time of its target.
"""

from __future__ import annotations

import numpy as np

from sweeplab.data.base import ArrayDataModule, Task


class SeriesDataModule(ArrayDataModule):
    task = Task.REGRESSION
    time_ordered = True
    id_name = "time"

    def __init__(self, window: int = 16, horizon: int = 1, **kwargs) -> None:
        kwargs.setdefault("standardize", False)  # the series is scaled before windowing
        super().__init__(**kwargs)
        for name, value in (("window", window), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name}={value!r}: must be a positive integer")
        self.window, self.horizon = window, horizon

    def load_series(self) -> np.ndarray:
        raise NotImplementedError

    def times(self, n: int) -> np.ndarray:
        """The time of each of the ``n`` values (a step number unless the series has dates)."""
        return np.arange(n)

    def load_splits(self) -> dict[str, tuple[np.ndarray, ...]]:
        series = np.asarray(self.load_series(), dtype=np.float64).reshape(-1)
        if not np.isfinite(series).all():
            raise ValueError(f"{type(self).__name__}: the series has missing or infinite values")
        starts = np.arange(len(series) - self.window - self.horizon + 1)
        n = len(starts)
        n_test, n_val = int(round(n * self.test_fraction)), int(round(n * self.val_fraction))
        n_train = n - n_val - n_test
        if n_train < 2 or n_val < 1 or n_test < 1:
            raise ValueError(
                f"{len(series)} values with data.window={self.window}, data.horizon={self.horizon} give {n} samples: "
                "too few for a train/val/test split; shorten the window or use a longer series"
            )
        # Scaling statistics from the values training samples see (inputs and targets).
        train_end = n_train - 1 + self.window + self.horizon
        mean, std = series[:train_end].mean(), series[:train_end].std() or 1.0
        scaled = ((series - mean) / std).astype(np.float32)
        x = np.stack([scaled[s : s + self.window] for s in starts])[:, :, None]
        y = scaled[starts + self.window + self.horizon - 1]
        t = self.times(len(series))[starts + self.window + self.horizon - 1]
        self.target_scale_ = (float(mean), float(std))
        targets = series[starts + self.window + self.horizon - 1]
        cuts = {"train": slice(0, n_train), "val": slice(n_train, n_train + n_val), "test": slice(n_train + n_val, n)}
        self.raw_targets = {name: targets[cut] for name, cut in cuts.items()}
        return {name: (x[cut], y[cut], t[cut]) for name, cut in cuts.items()}


class SunspotsDataModule(SeriesDataModule):
    """Yearly sunspot numbers 1700-2008 (309 values), bundled with statsmodels."""

    id_name = "year"

    def _data(self):
        from statsmodels.datasets import sunspots

        return sunspots.load_pandas().data

    def load_series(self) -> np.ndarray:
        return self._data()["SUNACTIVITY"].to_numpy()

    def times(self, n: int) -> np.ndarray:
        return self._data()["YEAR"].to_numpy().astype(np.int64)


class SineDataModule(SeriesDataModule):
    """A synthetic sine wave with Gaussian noise (seeded)."""

    def __init__(self, n_points: int = 2000, period: float = 50.0, noise: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 10:
            raise ValueError(f"data.n_points={n_points!r}: must be an integer >= 10")
        if period <= 0:
            raise ValueError(f"data.period={period}: must be > 0")
        if noise < 0:
            raise ValueError(f"data.noise={noise}: must be >= 0")
        self.n_points, self.period, self.noise = n_points, period, noise

    def load_series(self) -> np.ndarray:
        t = np.arange(self.n_points)
        rng = np.random.default_rng(self.seed)
        return np.sin(2 * np.pi * t / self.period) + self.noise * rng.standard_normal(self.n_points)

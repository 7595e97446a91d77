"""A user's own table: one CSV file, one target column."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeplab.data.base import ArrayDataModule, Task

MISSING = ("error", "drop", "mean", "median", "zero")
CATEGORICAL = ("onehot", "ordinal", "error")
TASKS = ("auto", "binary", "multiclass", "regression")


class CsvDataModule(ArrayDataModule):
    """Features and a target column from a CSV file.

    ``task=auto`` infers it from the target: text or at most
    ``max_classes`` integer values -> classification (2 values: binary), else
    regression. Non-numeric feature columns are one-hot (or ordinal) encoded;
    missing values follow ``missing`` (error, drop, mean, median, zero).
    """

    def __init__(
        self,
        path: str,
        target: str,
        task: str = "auto",
        missing: str = "error",
        categorical: str = "onehot",
        max_classes: int = 20,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        for name, value, choices in (("task", task, TASKS), ("missing", missing, MISSING), ("categorical", categorical, CATEGORICAL)):
            if value not in choices:
                raise ValueError(f"data.{name}={value!r}: choose one of {', '.join(choices)}")
        if not path:
            raise ValueError("data.path is not set: give the CSV file, e.g. data.path=/data/table.csv")
        self.path = Path(path).expanduser()
        self.target = target
        self.task_option = task
        self.missing = missing
        self.categorical = categorical
        self.max_classes = max_classes
        self.class_names = None
        self._loaded: tuple[np.ndarray, np.ndarray] | None = None
        self._load()  # fail on bad files now, before a run is created; and the task must be known

    def _load(self) -> None:
        import pandas as pd

        if not self.path.exists():
            raise FileNotFoundError(f"data.path={self.path}: no such file")
        if self.path.is_dir():
            raise ValueError(f"data.path={self.path}: is a folder, not a CSV file")
        try:
            frame = pd.read_csv(self.path)
        except pd.errors.EmptyDataError:
            raise ValueError(f"data.path={self.path}: the file is empty") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ValueError(f"data.path={self.path}: not a readable CSV ({' '.join(str(exc).split())})") from None
        if frame.empty:
            raise ValueError(f"data.path={self.path}: has a header but no rows")
        if self.target not in frame.columns:
            raise ValueError(f"data.target={self.target!r}: no such column in {self.path.name}; columns: {', '.join(map(str, frame.columns))}")
        if frame.shape[1] < 2:
            raise ValueError(f"data.path={self.path}: only the target column, no features")

        if frame.isna().any().any():
            columns = [str(c) for c in frame.columns[frame.isna().any()]]
            if self.missing == "error":
                raise ValueError(
                    f"data.path={self.path.name}: missing values in {', '.join(columns)}; "
                    "set data.missing=drop, mean, median or zero"
                )
            if self.missing == "drop" or frame[self.target].isna().any():
                frame = frame.dropna() if self.missing == "drop" else frame.dropna(subset=[self.target])
        y_raw = frame.pop(self.target)
        features = self._encode(frame)
        self.task = self._infer_task(y_raw)
        if self.task is Task.REGRESSION:
            y = pd.to_numeric(y_raw, errors="coerce")
            if y.isna().any():
                raise ValueError(f"data.task=regression but column {self.target!r} holds non-numeric values such as {y_raw[y.isna()].iloc[0]!r}")
            y = y.to_numpy(np.float32)
        else:
            codes, names = pd.factorize(y_raw, sort=True)
            self.class_names = [str(n) for n in names]
            if self.task is Task.BINARY and len(names) != 2:
                raise ValueError(
                    f"data.task=binary but column {self.target!r} has {len(names)} classes ({', '.join(self.class_names[:6])}); "
                    "use data.task=multiclass or auto"
                )
            y = codes.astype(np.int64)
            if len(names) < 2:
                raise ValueError(f"column {self.target!r} has a single class ({self.class_names[0]}): nothing to classify")
        self._loaded = (features, y)
        if len(y) < 10:
            raise ValueError(f"data.path={self.path.name}: {len(y)} usable rows; need at least 10 to split into train/val/test")

    def _encode(self, frame) -> np.ndarray:
        import pandas as pd

        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if text and self.categorical == "error":
            raise ValueError(f"non-numeric feature columns {', '.join(map(str, text))}; set data.categorical=onehot or ordinal")
        if text and self.categorical == "onehot":
            frame = pd.get_dummies(frame, columns=text, dtype=np.float32)
        elif text:
            for c in text:
                frame[c] = pd.factorize(frame[c], sort=True)[0].astype(np.float32)
        if self.missing in ("mean", "median", "zero"):
            fill = 0.0 if self.missing == "zero" else getattr(frame, self.missing)(numeric_only=True)
            frame = frame.fillna(fill)
        return frame.to_numpy(np.float32)

    def _infer_task(self, y) -> Task:
        import pandas as pd

        if self.task_option != "auto":
            return Task(self.task_option)
        numeric = pd.api.types.is_numeric_dtype(y)
        integral = numeric and np.all(np.mod(y.dropna().to_numpy(dtype=float), 1) == 0)
        n_values = y.nunique()
        if not numeric or (integral and n_values <= self.max_classes):
            return Task.BINARY if n_values == 2 else Task.MULTICLASS
        return Task.REGRESSION

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._loaded is not None
        return self._loaded

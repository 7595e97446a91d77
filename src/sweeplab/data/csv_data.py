"""A user's own table: one file (CSV and other delimited text, JSON, Parquet), one target column."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeplab.data.base import ArrayDataModule, Task

MISSING = ("error", "drop", "mean", "median", "zero")
CATEGORICAL = ("onehot", "ordinal", "error")
TASKS = ("auto", "binary", "multiclass", "regression")
DELIMITED = (".csv", ".tsv", ".tab", ".txt", ".dat", "")
FORMATS = ("csv", "tsv", "txt (delimited text)", "json", "jsonl", "parquet")


def sniff_separator(path: Path) -> str:
    """The column separator of a delimited text file, from its first lines."""
    import csv

    with open(path, newline="", errors="replace") as handle:
        sample = handle.read(65536)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:  # one column, or no consistent separator: pandas' default
        return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _refuse_duplicate_headers(path: Path, sep: str) -> None:
    """pandas renames a repeated column name (a, a.1): the run, and the model it logs, would then ask
    for a column the file does not have. Refused, naming the names."""
    import csv
    from collections import Counter

    with open(path, newline="", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    repeated = sorted(name for name, count in Counter(h.strip() for h in header).items() if count > 1)
    if repeated:
        raise ValueError(
            f"data.path={path.name}: the header names {', '.join(map(repr, repeated))} more than once; give each column its own name"
        )


def read_table(path: Path, sep: str | None = None):
    """A table file as a DataFrame, by its extension; one-line errors naming the problem."""
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"data.path={path}: no such file")
    if path.is_dir():
        raise ValueError(f"data.path={path}: is a folder, not a table file")
    if not path.is_file():  # /dev/zero, a pipe, a socket: no size to read, and maybe no end
        raise ValueError(f"data.path={path}: not a regular file (a device, pipe or socket); give a table file ({', '.join(FORMATS)})")
    if path.stat().st_size == 0:
        raise ValueError(f"data.path={path}: the file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        with open(path, errors="replace") as handle:
            first = handle.read(256).lstrip()[:1]  # JSON opens with { or [
        if suffix in (".json", ".jsonl", ".ndjson"):
            return pd.read_json(path, lines=suffix != ".json" or first not in ("[", "{"))
        if suffix not in DELIMITED:
            raise ValueError(f"data.path={path.name}: unknown table format {suffix!r}; sweeplab reads {', '.join(FORMATS)}")
        if first in ("{", "["):
            raise ValueError(f"data.path={path.name}: looks like JSON, not delimited text; name the file .json (or .jsonl)")
        sep = sep or sniff_separator(path)
        _refuse_duplicate_headers(path, sep)
        return pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError:
        raise ValueError(f"data.path={path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"data.path={path}: not a readable {suffix.lstrip('.') or 'text'} file ({' '.join(str(exc).split())})") from None
    except ImportError as exc:  # parquet without pyarrow
        raise ValueError(f"data.path={path.name}: reading {suffix} needs a package that is missing ({exc})") from None


class CsvDataModule(ArrayDataModule):
    """Features and a target column from a CSV file.

    ``task=auto`` infers it from the target: text or at most
    ``max_classes`` integer values -> classification (2 values: binary), else
    regression. Non-numeric feature columns are one-hot (or ordinal) encoded;
    missing and infinite values follow ``missing`` (error, drop, mean, median,
    zero). Regression targets are standardised with train statistics (see
    ArrayDataModule); metrics are reported in the target's own units.

    Delimited text (``.csv``, ``.tsv``, ``.txt``...) has its separator sniffed
    unless ``sep`` is given; ``.json`` (records or columns), ``.jsonl`` and
    ``.parquet`` are read with pandas. A sample's id is its 0-based data row
    in the file (header not counted).
    """

    def __init__(
        self,
        path: str,
        target: str,
        task: str = "auto",
        missing: str = "error",
        categorical: str = "onehot",
        max_classes: int = 20,
        sep: str | None = None,
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
        self.sep = sep
        self.class_names = None
        self._loaded: tuple[np.ndarray, np.ndarray] | None = None
        self._rows: np.ndarray | None = None
        self._load()  # fail on bad files now, before a run is created; and the task must be known

    def _read(self):
        return read_table(self.path, self.sep)

    def _load(self) -> None:
        import pandas as pd

        frame = self._read()
        if frame.empty:
            raise ValueError(f"data.path={self.path}: has a header but no rows")
        frame.columns = [str(c) for c in frame.columns]
        if self.target not in frame.columns:
            hint = ""
            if frame.shape[1] == 1:
                found = next((s for s in ",;\t|" if s in frame.columns[0]), None)
                hint = f"; the file seems separated by {found!r}: set data.sep='{found}'" if found else "; the file has a single column"
            raise ValueError(f"data.target={self.target!r}: no such column in {self.path.name}; columns: {', '.join(frame.columns)}{hint}")
        if frame.shape[1] < 2:
            raise ValueError(f"data.path={self.path}: only the target column, no features")

        numeric = frame.select_dtypes("number")
        infinite = [str(c) for c in numeric.columns if np.isinf(numeric[c].to_numpy(dtype=float)).any()]
        if infinite:  # an infinite feature trains to a NaN loss: treat it as missing
            frame[infinite] = frame[infinite].replace([np.inf, -np.inf], np.nan)
        if frame.isna().any().any():
            columns = [str(c) for c in frame.columns[frame.isna().any()]]
            if self.missing == "error":
                raise ValueError(
                    f"data.path={self.path.name}: missing or infinite values in {', '.join(columns)}; "
                    "set data.missing=drop, mean, median or zero"
                )
            if self.missing == "drop" or frame[self.target].isna().any():
                frame = frame.dropna() if self.missing == "drop" else frame.dropna(subset=[self.target])
        self._rows = frame.index.to_numpy()
        y_raw = frame.pop(self.target)
        self.example_rows_ = frame.head(5).copy()  # as read: the input example of the run's MLflow Model
        features = self._encode(frame)
        self.task = self._infer_task(y_raw)
        if self.task is Task.REGRESSION:
            y = pd.to_numeric(y_raw, errors="coerce")
            if y.isna().any():
                raise ValueError(
                    f"data.task=regression but column {self.target!r} holds non-numeric values such as {y_raw[y.isna()].iloc[0]!r}"
                )
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
        """Features as floats; what it did is kept in ``encoding_`` so a served model encodes new rows the same way."""
        import pandas as pd

        columns = [str(c) for c in frame.columns]
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if text and self.categorical == "error":
            raise ValueError(f"non-numeric feature columns {', '.join(map(str, text))}; set data.categorical=onehot or ordinal")
        categories = {str(c): [str(v) for v in sorted(frame[c].dropna().astype(str).unique())] for c in text}
        if text and self.categorical == "onehot":
            frame = pd.get_dummies(frame.astype({c: str for c in text}).where(frame.notna()), columns=text, dtype=np.float32)
        elif text:
            for c in text:
                frame[c] = pd.factorize(frame[c].astype(str).where(frame[c].notna()), sort=True)[0].astype(np.float32)
        empty = [str(c) for c in frame.columns if frame[c].isna().all()]
        if empty:  # a mean or median of nothing is NaN: the column would reach training as NaN
            raise ValueError(
                f"data.path={self.path.name}: column(s) {', '.join(empty)} hold no value in any row; "
                "remove them from the file (no data.missing option can fill a column that is all missing)"
            )
        fill = None
        if self.missing in ("mean", "median", "zero"):
            fill = 0.0 if self.missing == "zero" else getattr(frame, self.missing)(numeric_only=True)
            frame = frame.fillna(fill)
        self.encoding_ = {
            "columns": columns,
            "categories": categories,
            "categorical": self.categorical,
            "feature_names": [str(c) for c in frame.columns],
            "fill": None
            if fill is None
            else ({c: 0.0 for c in frame.columns} if self.missing == "zero" else {str(k): float(v) for k, v in fill.items()}),
        }
        self.input_columns = columns
        values = frame.to_numpy(np.float64)
        _check_magnitudes(values, self.encoding_["feature_names"], self.path.name)
        return values.astype(np.float32)

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

    def load_ids(self, n: int) -> np.ndarray:
        assert self._rows is not None and len(self._rows) == n
        return self._rows


def _check_magnitudes(values: np.ndarray, names: list[str], file: str) -> None:
    """Features train in float32 and are standardized there (a sum of squares over the rows):
    a value beyond that range becomes inf, or its standard deviation does, and the model would
    train on inf or NaN (a forest on clipped values, a network to a NaN loss blamed on the lr)."""
    limit = float(np.sqrt(np.finfo(np.float32).max / max(len(values), 1)))
    largest = np.nanmax(np.abs(values), axis=0, initial=0.0) if len(values) else np.zeros(len(names))
    too_large = [(name, peak) for name, peak in zip(names, largest) if peak > limit]
    if too_large:
        shown = ", ".join(f"{name} (up to {peak:.3g})" for name, peak in too_large[:10])
        raise ValueError(
            f"data.path={file}: values too large to train on in {shown}; features are standardized in float32, "
            f"which holds |x| up to {limit:.2g} over {len(values)} rows: rescale those columns (e.g. their log, or in other units)"
        )

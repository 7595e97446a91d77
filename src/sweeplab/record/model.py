"""Each run's trained model as an MLflow Model: load it, serve it, register it.

A finished run logs its model under the name ``model`` (``runs:/<id>/model``)
in MLflow's own flavour (``pytorch`` for a network, ``sklearn`` for an
estimator), so ``mlflow.pytorch.load_model`` / ``mlflow.sklearn.load_model``
return the bare model. Its ``python_function`` flavour is this module: it
takes the data as the user has it (a frame with the training columns, or an
array of images), applies the run's own preprocessing (categorical encoding,
the training split's standardisation, the image shape), and returns labels
and class probabilities (``predicted_class``, ``p_<class>``, the columns of
``test_predictions.csv``) or regression values in the target's own units
(``y_pred``). What the preprocessing needs is in ``sweeplab_model.json``
beside the model, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve``
give the same answers as the run's test report.

Trust: the ``pytorch`` and ``sklearn`` flavours store the model with pickle,
and loading a pickle can run code. Load and serve only models from a store you
trust; a registered model is trusted code. (Checkpoints, by contrast, are
always loaded weights-only: ``sweeplab.record.checkpoints``.)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SPEC_FILE = "sweeplab_model.json"
TOKENIZER_FILE = "tokenizer.pkl"  # text models: the tokenizer fitted on the run's training texts
MODEL_NAME = "model"  # runs:/<id>/model
EXAMPLE_ROWS = 5
# What a served model may read beyond flavour, task and sample shape; absent (None) means not used.
OPTIONAL_KEYS = ("class_names", "columns", "text", "encoding", "mean", "std", "target_scale", "action_values", "states")


# -- what the model needs to read raw data -------------------------------------


def serving_spec(datamodule: Any, task: Any, flavor: str) -> dict[str, Any] | None:
    """The preprocessing and labels of this run's data, as plain JSON; None for
    data that is not an array of features per sample (text, corpora, environments)."""
    from sweeplab.data.base import ArrayDataModule

    if not isinstance(datamodule, ArrayDataModule):
        return None
    text = None
    if hasattr(datamodule, "model_inputs"):  # text: the model reads token ids, made from raw texts by the run's tokenizer
        if getattr(datamodule, "tokenizer", None) is None or not task.is_classification:
            return None  # a corpus for word vectors: nothing to predict
        text = {"max_length": datamodule.max_length, "pad_id": datamodule.tokenizer.pad_id}
    mean, std = datamodule.feature_scale_ if datamodule.feature_scale_ is not None else (None, None)
    return new_spec(
        flavor,
        task.value,
        list(datamodule.arrays("train")[0].shape[1:]),
        class_names=list(datamodule.class_names) if task.is_classification and datamodule.class_names else None,
        columns=["text"] if text else getattr(datamodule, "input_columns", None) or getattr(datamodule, "feature_names", None),
        text=text,
        encoding=getattr(datamodule, "encoding_", None),  # CSV: categories, fill values
        mean=None if mean is None else np.asarray(mean, dtype=np.float64).tolist(),
        std=None if std is None else np.asarray(std, dtype=np.float64).tolist(),
        target_scale=list(datamodule.target_scale_) if datamodule.target_scale_ is not None else None,
    )


def new_spec(flavor: str, task: str, sample_shape: list[int], **given: Any) -> dict[str, Any]:
    """Every key a served model reads, with what this run gives and no preprocessing for the rest."""
    from sweeplab import __version__

    spec = dict.fromkeys(OPTIONAL_KEYS)
    unknown = set(given) - set(spec)
    if unknown:
        raise TypeError(f"new_spec: unknown keys {sorted(unknown)}")
    return {"sweeplab_version": __version__, "flavor": flavor, "task": task, "sample_shape": sample_shape, **spec, **given}


def input_example(datamodule: Any, spec: dict[str, Any]) -> Any:
    """A few training samples as a user would send them: rows of the source
    table (a frame with its columns) or raw images (an array)."""
    import pandas as pd

    if spec["text"]:
        return pd.DataFrame({"text": datamodule.texts["train"][:EXAMPLE_ROWS]})
    rows = getattr(datamodule, "example_rows_", None)
    if rows is not None:  # CSV: the file's first rows as read, before encoding (their types are the signature's)
        return rows
    x = datamodule.unstandardize(datamodule.arrays("train")[0][:EXAMPLE_ROWS]).astype(np.float32)
    if spec["columns"]:
        return pd.DataFrame(x.reshape(len(x), -1).astype(np.float64), columns=spec["columns"])
    return x


# -- the python_function flavour -------------------------------------------------


def mlflow_pytorch() -> Any:
    """``mlflow.pytorch``, without the half second its import spends on the separate
    ``pytorch_lightning`` package (only for MLflow's autolog callback, unused here)."""
    import sys

    if "mlflow.pytorch" in sys.modules or "pytorch_lightning" in sys.modules:
        import mlflow.pytorch

        return mlflow.pytorch
    sys.modules["pytorch_lightning"] = None  # type: ignore[assignment]  # its import raises ImportError, which MLflow expects
    try:
        import mlflow.pytorch
    finally:
        del sys.modules["pytorch_lightning"]
    return mlflow.pytorch


class SweeplabPredictor:
    """What ``mlflow.pyfunc.load_model`` returns the ``predict`` of (wrapped by MLflow)."""

    def __init__(self, model: Any, spec: dict[str, Any], tokenizer: Any = None) -> None:
        self.model, self.spec, self.tokenizer = model, spec, tokenizer

    def features(self, data: Any) -> np.ndarray:
        """Raw input (frame, array, list) -> the standardised float32 array the model was trained on;
        input the training data could not have held (NaN, values beyond float32, states the
        environment lacks, empty texts) is refused naming its row and column."""
        spec = self.spec
        if spec["text"]:  # token ids, padded or cut to the training length
            return self._token_ids(data)
        columns = spec["columns"]
        names: list[str] | None = None
        if _is_frame(data) and columns and spec["encoding"]:
            x, names = encode_frame(data, spec["encoding"], dtype=np.float64), spec["encoding"]["feature_names"]
        elif _is_frame(data) and columns:
            x, names = data[_require_columns(data, columns)].to_numpy(dtype=np.float64), list(columns)
        else:
            try:
                x = np.asarray(data.to_numpy() if _is_frame(data) else data, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"input is not numbers of one shape ({exc})") from None
        _check_finite(x, names)
        if spec["states"] is not None:
            _check_states(x, int(spec["states"]))
        size = int(np.prod(spec["sample_shape"]))
        if x.size % size or x.ndim == 0:
            raise ValueError(
                f"input of shape {tuple(np.shape(x))}: each sample must hold {size} values (shape {tuple(spec['sample_shape'])})"
            )
        x = x.reshape(-1, size)
        if spec["mean"] is not None:
            x = (x - np.asarray(spec["mean"], dtype=np.float32)) / np.asarray(spec["std"], dtype=np.float32)
        return x.astype(np.float32).reshape(-1, *spec["sample_shape"])

    def _token_ids(self, data: Any) -> np.ndarray:
        if _is_frame(data):
            if "text" not in data.columns:
                raise ValueError(f"input lacks the column 'text' (one text per row); columns: {', '.join(map(str, data.columns))}")
            data = data["text"]
        from sweeplab.text.tokenizers import pad_ids

        texts = [str(t) for t in np.asarray(data, dtype=object).reshape(-1)]
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"row {empty[0]}: an empty text; each row needs at least one word ({len(empty)} empty row(s))")
        rows = self.tokenizer.encode(texts, self.spec["text"]["max_length"])
        return pad_ids(rows, int(self.spec["sample_shape"][0]), self.spec["text"]["pad_id"])

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        try:
            x = self.features(data)
        except ValueError as exc:  # served: HTTP 400 with this line, not 200 with an answer from garbage
            raise bad_input(str(exc)) from None
        task, names = self.spec["task"], self.spec["class_names"]
        if self.spec["flavor"] == "pytorch":
            from sweeplab.models.outputs import probabilities as class_probabilities

            scores = self._network_outputs(x)
            if task in ("binary", "multiclass"):  # as the test report computes them
                probabilities = class_probabilities(task, scores).numpy()
            else:
                probabilities, predicted = None, scores.float().numpy()
        else:
            flat = x.reshape(len(x), -1)
            if task == "reconstruction":  # PCA: back from the components
                return np.asarray(self.model.inverse_transform(self.model.transform(flat)), dtype=np.float32)
            predicted = np.asarray(self.model.predict(flat))
            is_classifier = task in ("binary", "multiclass")
            probabilities = self.model.predict_proba(flat) if is_classifier and hasattr(self.model, "predict_proba") else None
            if is_classifier and probabilities is None:  # SVC without probability=True: labels only
                return pd.DataFrame({"predicted_class": np.asarray(names or [], dtype=object)[predicted.astype(np.int64)]})
        if task in ("binary", "multiclass"):
            labels = names or [str(i) for i in range(probabilities.shape[1])]
            codes = probabilities.argmax(axis=1)
            frame = {"predicted_class": np.asarray(labels, dtype=object)[codes]}
            frame.update({f"p_{label}": probabilities[:, i] for i, label in enumerate(labels)})
            return pd.DataFrame(frame)
        if task == "regression":
            y = np.asarray(predicted, dtype=np.float64).reshape(len(x), -1)[:, 0]
            if self.spec["target_scale"]:
                mean, std = self.spec["target_scale"]
                y = y * std + mean
            return pd.DataFrame({"y_pred": y})
        if task == "clustering":
            return pd.DataFrame({"cluster": np.asarray(predicted).astype(np.int64)})
        if task == "reinforcement":  # the greedy action for each observation, and the action values it comes from
            values = np.asarray(predicted, dtype=np.float64).reshape(len(x), -1)
            frame = {"action": values.argmax(axis=1)}
            if self.spec["action_values"]:
                frame.update({f"q_{a}": values[:, a] for a in range(values.shape[1])})
            return pd.DataFrame(frame)
        return np.asarray(predicted, dtype=np.float32).reshape(len(x), -1)  # reconstruction: the standardised output

    def _network_outputs(self, x: np.ndarray) -> Any:
        import torch

        self.model.eval()
        with torch.no_grad():
            parameter = next(self.model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            return self.model(torch.from_numpy(x).to(device)).cpu()


@functools.lru_cache(maxsize=1)
def _bad_input_class() -> type:
    """Built on first use: MLflow is imported only where a model predicts."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class BadInput(MlflowException, ValueError):
        """Input a served model refuses: MLflow's scoring server answers 400 with the message."""

        def __init__(self, message: str) -> None:
            super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    return BadInput


def bad_input(message: str) -> Exception:
    """A ValueError that ``mlflow models serve`` answers with HTTP 400 and this message."""
    return _bad_input_class()(message)


def _check_finite(x: np.ndarray, names: list[str] | None) -> None:
    """NaN, infinite, or beyond float32 (what the model computes in): refused, naming the first row and column."""
    limit = float(np.finfo(np.float32).max)
    table = x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(-1, 1)
    bad = ~np.isfinite(table) | (np.abs(np.nan_to_num(table, nan=0.0, posinf=0.0, neginf=0.0)) > limit)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        label = f"column {names[column]!r}" if names and column < len(names) else f"value {column}"
        raise ValueError(
            f"row {row}, {label}: {table[row, column]:g} is not a finite number the model can read (|x| up to {limit:.3g}); "
            f"{int(bad.any(axis=1).sum())} row(s) affected"
        )


def _check_states(x: np.ndarray, states: int) -> None:
    """A tabular policy reads state numbers: whole numbers from 0 to states - 1."""
    flat = x.reshape(-1)
    bad = np.flatnonzero((flat != np.round(flat)) | (flat < 0) | (flat >= states))
    if bad.size:
        raise ValueError(
            f"row {int(bad[0])}: state {flat[bad[0]]:g} is not a state of this environment; give whole numbers from 0 to {states - 1}"
        )


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "to_numpy")


def _require_columns(frame: Any, columns: list[str]) -> list[str]:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"input lacks the training columns {', '.join(map(str, missing))}; expected: {', '.join(columns)}")
    return columns


def encode_frame(frame: Any, encoding: dict[str, Any], dtype: Any = np.float32) -> np.ndarray:
    """A CSV's raw feature columns -> the encoded array, as at training time:
    the same one-hot columns or ordinal codes (from the training file's
    categories), the same fill values for gaps."""
    import pandas as pd

    columns = _require_columns(frame, encoding["columns"])
    frame = frame[columns].copy()
    out: dict[str, Any] = {}
    for column in columns:
        values = frame[column]
        categories = encoding["categories"].get(column)
        if categories is None:
            out[column] = pd.to_numeric(values, errors="coerce").astype("float64")
            continue
        text = values.astype(str)
        unknown = sorted(set(text[values.notna()]) - set(categories))
        if unknown:
            raise ValueError(f"column {column!r}: value {unknown[0]!r} was not in the training data; known: {', '.join(categories)}")
        if encoding["categorical"] == "onehot":
            out.update({f"{column}_{c}": (text == c).astype("float64") for c in categories})
        else:
            out[column] = text.map({c: float(i) for i, c in enumerate(categories)}).where(values.notna(), -1.0)  # as factorize
    encoded = pd.DataFrame(out)[encoding["feature_names"]]
    if encoding["fill"] is not None:
        encoded = encoded.fillna(pd.Series(encoding["fill"]))
    if encoded.isna().any().any():
        gaps = [str(c) for c in encoded.columns[encoded.isna().any()]]
        raise ValueError(f"missing values in {', '.join(gaps)}; the model was trained with data.missing=error")
    return encoded.to_numpy(dtype)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> SweeplabPredictor:
    """MLflow's entry point for the python_function flavour (``path``: the spec file)."""
    from sweeplab import __version__

    spec_file = Path(path)
    spec = {**dict.fromkeys(OPTIONAL_KEYS), **json.loads(spec_file.read_text())}  # a key a later version added: not used
    root = str(spec_file.parent)
    try:
        if spec["flavor"] == "pytorch":
            model = mlflow_pytorch().load_model(root, map_location="cpu")
        else:
            import mlflow.sklearn

            model = mlflow.sklearn.load_model(root)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise RuntimeError(
            f"this model was logged by sweeplab {spec.get('sweeplab_version', '?')} and cannot be read by sweeplab "
            f"{__version__} ({type(exc).__name__}: {exc}); install sweeplab=={spec.get('sweeplab_version', '?')} to load it"
        ) from None
    tokenizer = None
    if spec["text"]:
        import pickle

        with open(spec_file.parent / TOKENIZER_FILE, "rb") as f:
            tokenizer = pickle.load(f)  # noqa: S301 - the run's own tokenizer, as trusted as the model beside it
    return SweeplabPredictor(model, spec, tokenizer)


# -- logging: Model.log calls save_model of this "flavour" module -----------------


def save_model(
    path: str,
    mlflow_model: Any,
    model: Any,
    spec: dict[str, Any],
    signature: Any = None,
    input_example: Any = None,
    tokenizer: Any = None,
    **_: Any,
) -> None:
    """Save ``model`` in its own MLflow flavour, then make this module its python_function loader."""
    import logging

    requirements = list(pip_requirements(spec["flavor"]))
    # Their notes on pickle (the trust model above) and on an estimator without predict (added below) are known.
    for flavor in ("mlflow.sklearn", "mlflow.pytorch"):
        logging.getLogger(flavor).setLevel(logging.ERROR)
    _save_flavor(path, mlflow_model, model, spec, signature, input_example, requirements)
    Path(path, SPEC_FILE).write_text(json.dumps(spec, indent=1))
    if spec["text"]:
        import pickle

        with open(Path(path, TOKENIZER_FILE), "wb") as f:
            pickle.dump(tokenizer, f)
    if "python_function" not in mlflow_model.flavors:  # MLflow adds none for an estimator without predict (PCA)
        from mlflow import pyfunc as pyfunc_flavor

        pyfunc_flavor.add_to_model(mlflow_model, loader_module=__name__, conda_env="conda.yaml", python_env="python_env.yaml")
    pyfunc = mlflow_model.flavors["python_function"]
    pyfunc.update({"loader_module": __name__, "data": SPEC_FILE})
    pyfunc.pop("predict_fn", None)
    mlflow_model.metadata = {**(mlflow_model.metadata or {}), "sweeplab_version": spec["sweeplab_version"]}
    mlflow_model.save(os.path.join(path, "MLmodel"))


def _save_flavor(
    path: str, mlflow_model: Any, model: Any, spec: dict[str, Any], signature: Any, input_example: Any, requirements: list[str]
) -> None:
    if spec["flavor"] == "pytorch":
        # Pickled (the eager module), not torch.export's pt2: every network here loads back, whatever its
        # control flow (recurrent, transformers), and serves any batch size.
        mlflow_pytorch().save_model(
            model.eval(),
            path,
            mlflow_model=mlflow_model,
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
            serialization_format="pickle",
        )
    else:
        import mlflow.sklearn

        mlflow.sklearn.save_model(
            model,
            path,
            mlflow_model=mlflow_model,
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
            **_sklearn_format(model),
        )


@contextlib.contextmanager
def _pins_from_this_environment() -> Iterator[None]:
    """Skip MLflow's check that a model's requirements match this environment, on saving
    it and on loading it back to validate the input example: ``pip_requirements`` reads
    them from this environment, so the check can only pass, and it first maps every
    installed package's files to its modules (about 1.2 s in each process that logs a model)."""
    import mlflow.pyfunc
    from mlflow.utils import environment

    modules = [m for m in (environment, mlflow.pyfunc) if hasattr(m, "warn_dependency_requirement_mismatches")]
    checks = [m.warn_dependency_requirement_mismatches for m in modules]  # another MLflow version may have neither
    for module in modules:
        module.warn_dependency_requirement_mismatches = lambda requirements: None
    try:
        yield
    finally:
        for module, check in zip(modules, checks):
            module.warn_dependency_requirement_mismatches = check


def _sklearn_format(model: Any) -> dict[str, Any]:
    """skops, MLflow's safe format, trusting the types it does not know (a tree's node
    storage) because this run built them; cloudpickle where skops cannot write the
    estimator (a self-organising map's own classes)."""
    try:
        import skops.io

        return {"serialization_format": "skops", "skops_trusted_types": skops.io.get_untrusted_types(data=skops.io.dumps(model))}
    except Exception:  # noqa: BLE001 - skops refuses many objects, in many ways
        return {"serialization_format": "cloudpickle"}


@functools.cache
def pip_requirements(flavor: str) -> list[str]:
    """Pinned from what is installed: given, not inferred (inference loads the model in a subprocess, seconds per run)."""
    from importlib.metadata import version

    names = ["sweeplab", "mlflow", "numpy", "pandas", *(["torch"] if flavor == "pytorch" else ["scikit-learn"])]
    found = []
    for name in names:
        try:
            found.append(f"{name}=={version(name)}")
        except Exception:  # noqa: BLE001 - a name missing from metadata is left unpinned
            found.append(name)
    return found


def _signature(model: Any, spec: dict[str, Any], example: Any, tokenizer: Any = None) -> Any:
    import warnings

    from mlflow.models import infer_signature

    with warnings.catch_warnings():  # integer columns are the file's own: MLflow's hint about gaps in them adds nothing here
        warnings.filterwarnings("ignore", message=".*integer column.*")
        return infer_signature(example, SweeplabPredictor(model, spec, tokenizer).predict(example))


def _create_logged_model(client: Any, run_id: str, spec: dict[str, Any], known: tuple[str, dict[str, str]] | None) -> Any:
    """In the run's experiment (Model.log alone would use the process's current one), with the run's
    params. ``known``: the experiment id and params the run was described with (else read: a
    ``get_run`` loads every tag, param and metric of the run, 18 ms a model)."""
    if known is None:
        run = client.get_run(run_id)
        known = run.info.experiment_id, dict(run.data.params)
    experiment_id, params = known
    return client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id, params=params, model_type=spec["task"])


def log_model(
    tracking_uri: str,
    run_id: str,
    model: Any,
    spec: dict[str, Any],
    example: Any,
    tokenizer: Any = None,
    known: tuple[str, dict[str, str]] | None = None,
) -> str:
    """Log ``model`` to the run as ``model`` with its signature and input example; return its model id.
    ``known``: the run's experiment id and params (else read from the store).

    Saved to a folder, then sent as the logged model's artifacts, as ``sync`` sends one saved
    offline: the same files and MLmodel as ``Model.log``, without what it adds after saving (it
    reads every metric's history of the run to link those of step 0 to the model, where sweeplab
    logs none, and loads the model back to check the example it was just given). A third of a
    run's model logging, which a fused group pays once per trial."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, MODEL_NAME)
        save_local(path, model, spec, example, tokenizer)
        return log_saved_model(tracking_uri, run_id, path, known)


def save_local(path: Path, model: Any, spec: dict[str, Any], example: Any, tokenizer: Any = None) -> None:
    """The same MLflow Model in a local folder (the server could not take it): ``log_saved_model`` sends it later."""
    import shutil

    from mlflow.models import Model

    shutil.rmtree(path, ignore_errors=True)
    signature = _signature(model, spec, example, tokenizer)
    with _pins_from_this_environment():
        save_model(str(path), Model(), model=model, spec=spec, signature=signature, input_example=example, tokenizer=tokenizer)


def log_saved_model(tracking_uri: str, run_id: str, path: Path, known: tuple[str, dict[str, str]] | None = None) -> str:
    """Log a model ``save_local`` wrote as the run's ``model``; return its model id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    spec = json.loads((path / SPEC_FILE).read_text())
    logged = _create_logged_model(client, run_id, spec, known)
    saved = Model.load(str(path / "MLmodel"))
    saved.run_id, saved.model_id, saved.model_uuid, saved.artifact_path = run_id, logged.model_id, logged.model_id, logged.artifact_location
    saved.save(str(path / "MLmodel"))
    client.log_model_artifacts(logged.model_id, str(path))
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged.model_id

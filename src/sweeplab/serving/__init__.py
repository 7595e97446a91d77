"""Serving a run's model: the registry (registry: the best run's model as the champion version).

The model itself is an MLflow Model with sweeplab's flavour (``sweeplab.record.model``),
served by ``mlflow models serve``. Models logged by 0.1.0 name this package as their
``loader_module``; MLflow asks it for ``_load_pyfunc``.
"""


def __getattr__(name: str):
    if name == "_load_pyfunc":
        from sweeplab.record.model import _load_pyfunc

        return _load_pyfunc
    raise AttributeError(f"module 'sweeplab.serving' has no attribute {name!r}")

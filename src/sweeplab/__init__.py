"""sweeplab: config-driven deep-learning experiments.

For notebooks: ``sweeplab.runs(experiment=..., sweep=..., where={...})`` returns
the runs as a pandas DataFrame, ``sweeplab.summarize(df, by=[...], metrics=[...])``
their mean ± sd per group (see ``sweeplab.reports.results``), and
``sweeplab.significance(df, by=[...], over="seed", metric="test/f1")`` whether
the best group is really better than each other (see ``sweeplab.reports.significance``).
"""

import os

__version__ = "0.1.0"

# Runs make no network calls: MLflow's usage telemetry (a config fetch at import, events posted
# from a thread) stays off unless the user sets MLFLOW_DISABLE_TELEMETRY themselves. It must be
# set before MLflow is imported; every sweeplab process imports this package first.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def __getattr__(name: str):
    # Lazy: `import sweeplab` (every console script does) must not import MLflow and pandas.
    if name in ("runs", "summarize"):
        from sweeplab.reports import results

        return getattr(results, name)
    if name == "significance":
        from sweeplab.reports.significance import significance

        return significance
    raise AttributeError(f"module 'sweeplab' has no attribute {name!r}")

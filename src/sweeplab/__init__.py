"""sweeplab: config-driven deep-learning experiments.

For notebooks: ``sweeplab.runs(experiment=..., sweep=..., where={...})`` returns
the runs as a pandas DataFrame, ``sweeplab.summarize(df, by=[...], metrics=[...])``
their mean ± sd per group (see ``sweeplab.results``).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `import sweeplab` (every console script does) must not import MLflow and pandas.
    if name in ("runs", "summarize"):
        from sweeplab import results

        return getattr(results, name)
    raise AttributeError(f"module 'sweeplab' has no attribute {name!r}")

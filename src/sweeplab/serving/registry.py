"""`sweeplab register`: the best run of an experiment (or of one sweep) becomes the
next version of a registered model, with the alias ``champion``.

    sweeplab register --experiment sweeplab --sweep 2026-11-25_14-38-29-123456 --metric test/f1 --model-name digits
    python -c "import mlflow; print(mlflow.pyfunc.load_model('models:/digits@champion').predict(...))"
    mlflow models serve -m models:/digits@champion --env-manager local
"""

from __future__ import annotations

import argparse
from typing import Any

ALIAS = "champion"


def best_run(runs: Any, metric: str) -> tuple[Any, list[str]]:
    """The best FINISHED run with a logged model by ``metric`` (lower is better for
    losses and errors), and the ids of the runs that tie with it; among ties the
    earliest run wins, so registering twice picks the same one."""
    from sweeplab.reports.compare import rank

    finished = runs[runs["status"].astype(str).str.startswith("FINISHED")]
    if finished.empty:
        raise ValueError("no FINISHED run to register among these runs")
    ranked = rank(finished.copy(), metric)  # one line naming the metrics these runs have, if not this one
    column = f"metrics.{metric}"
    ranked = ranked[ranked[column].notna()]
    if ranked.empty:
        raise ValueError(f"--metric {metric}: no FINISHED run has a value for it")
    with_model = ranked["tags.sweeplab.model"].fillna("").str.startswith("runs:/") if "tags.sweeplab.model" in ranked else None
    if with_model is None or not with_model.any():
        raise ValueError("none of these runs logged an MLflow Model (trained with logger.log_model=false, or before it existed)")
    ranked = ranked[with_model]
    best_value = ranked[column].iloc[0]
    tied = ranked[ranked[column] == best_value].sort_values("start_time")
    return tied.iloc[0], [str(r) for r in tied["run_id"].iloc[1:]]


def register(store: str, experiment: str, metric: str, model_name: str, sweep: str | None = None) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    from sweeplab.reports.results import load_runs

    if not model_name.strip():
        raise ValueError("--model-name: give a name for the registered model, e.g. --model-name digits_classifier")
    run, ties = best_run(load_runs(store, experiment, sweep), metric)
    run_id, value = str(run["run_id"]), float(run[f"metrics.{metric}"])
    if ties:
        print(
            f"sweeplab register: {len(ties) + 1} runs tie at {metric}={value:.6g}; registering the earliest, {run_id} (also: {', '.join(ties)})"
        )
    mlflow.set_tracking_uri(store)
    tags = {"sweeplab.run_id": run_id, "sweeplab.metric": metric, "sweeplab.metric_value": f"{value:.6g}"}
    if isinstance(run.get("tags.sweeplab.config_hash"), str):
        tags["sweeplab.config_hash"] = run["tags.sweeplab.config_hash"]
    client = MlflowClient(store)
    outputs = client.get_run(run_id).outputs
    model_ids = [o.model_id for o in (outputs.model_outputs if outputs else [])]
    source = f"models:/{model_ids[-1]}" if model_ids else f"runs:/{run_id}/model"
    version = mlflow.register_model(source, model_name, tags=tags)
    client.set_registered_model_alias(model_name, ALIAS, version.version)
    print(f"registered run {run_id} ({metric}={value:.6g}) as {model_name} version {version.version}, alias {ALIAS}")
    print(f"load:  mlflow.pyfunc.load_model('models:/{model_name}@{ALIAS}')")
    print(f"serve: MLFLOW_TRACKING_URI={store} mlflow models serve -m models:/{model_name}@{ALIAS} --env-manager local")
    print("trust: loading it unpickles the model (MLflow's pytorch and sklearn flavours): load it only from a store you trust")
    return version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="sweeplab", help="MLflow experiment name (default: sweeplab)")
    parser.add_argument("--sweep", default=None, help="only runs of this sweep id (tag sweeplab.sweep_id)")
    parser.add_argument("--metric", default="test/f1", help="metric that picks the best run (default: test/f1; lower wins for losses)")
    parser.add_argument("--model-name", required=True, help="registered model to add a version to (created if new)")
    parser.add_argument("--store", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")


def run_from_args(args: argparse.Namespace) -> None:
    from sweeplab.record.tracking import default_tracking_uri, existing_store

    register(existing_store(args.store or default_tracking_uri()), args.experiment, args.metric, args.model_name, args.sweep)

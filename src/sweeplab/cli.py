"""The `sweeplab` command: compare runs, register the best, list and close stale runs, open the MLflow UI."""

from __future__ import annotations

import argparse
import sys


def _ui(args: argparse.Namespace) -> None:
    import os
    import shutil
    import socket

    from sweeplab.record.tracking import default_tracking_uri
    from sweeplab.redact import redact_uri

    uri = args.store or default_tracking_uri()
    # A port already taken: MLflow's UI would fail after this line, and the URL would show another program.
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the UI's server binds: a port in TIME_WAIT is free
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise ValueError(
                f"--port {args.port}: {args.host}:{args.port} is already in use ({exc.strerror}), perhaps by another MLflow UI; "
                "choose a free one with --port"
            ) from None
    address = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {redact_uri(uri)} at {address}  (Ctrl-C to stop)", flush=True)
    for name, page in _experiment_pages(uri, address):
        print(f"  runs of {name}: {page}", flush=True)
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    # MLflow 3's server starts a job runner with seven worker processes for GenAI scorers, which sweeplab's
    # runs never use: without it the UI answers in a third of the time and stops at once on Ctrl-C.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(mlflow, [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)])


def _experiment_pages(uri: str, address: str, most: int = 8) -> list[tuple[str, str]]:
    """The runs table of each experiment that has runs (MLflow 3 opens an experiment on its
    GenAI overview, not on its runs), the most recently updated first."""
    from mlflow.tracking import MlflowClient

    try:
        experiments = MlflowClient(uri).search_experiments(order_by=["last_update_time DESC"], max_results=most + 1)
    except Exception:  # noqa: BLE001 - a store MLflow cannot read: its UI will say why
        return []
    shown = [e for e in experiments if e.name != "Default" or e.last_update_time != e.creation_time]
    return [(repr(e.name), f"{address}/#/experiments/{e.experiment_id}/runs") for e in shown[:most]]


def _runs(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from sweeplab.record.liveness import list_running
    from sweeplab.record.tracking import default_tracking_uri, existing_store

    rows = list_running(existing_store(args.store or default_tracking_uri()), args.experiment, args.close)
    if not rows:
        print("no RUNNING runs")
        return
    table = Table(title="RUNNING runs" + (" (processes gone: closed)" if args.close else ""))
    for column in ("run_id", "name", "process", "state", "now"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    Console().print(table)
    gone = sum(r["state"] == "gone" and r["now"] == "RUNNING" for r in rows)
    if gone:
        print(f"{gone} run(s) whose process is gone: `sweeplab runs --close` marks them KILLED")


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    from sweeplab.errors import run_cli
    from sweeplab.record import publish
    from sweeplab.reports import compare
    from sweeplab.serving import registry

    parser = argparse.ArgumentParser(prog="sweeplab", description="Compare sweeplab runs tracked in MLflow, and keep their records true.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_compare = sub.add_parser("compare", help="rank runs by a metric: table, CSV, PNG, best command line")
    compare.add_arguments(p_compare)
    p_compare.set_defaults(func=compare.run_from_args)
    p_register = sub.add_parser("register", help="register the best run's model as the next version of a registered model, alias champion")
    registry.add_arguments(p_register)
    p_register.set_defaults(func=registry.run_from_args)
    p_sync = sub.add_parser("sync", help="send what a run kept while its tracking server was gone (unsynced.json), then close it")
    p_sync.add_argument("run_dir", help="the run folder the training command named")
    p_sync.add_argument("--store", default=None, help="the tracking server, if not the one the run used (or to give its password)")
    p_sync.set_defaults(func=lambda a: publish.sync(Path(a.run_dir), a.store))
    p_runs = sub.add_parser("runs", help="list RUNNING runs and whether their process is alive; --close marks the dead ones KILLED")
    p_runs.add_argument("--experiment", default=None, help="one experiment (default: all)")
    p_runs.add_argument("--store", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    p_runs.add_argument("--close", action="store_true", help="mark KILLED the runs whose process is gone, with the reason as a tag")
    p_runs.set_defaults(func=_runs)
    p_ui = sub.add_parser("ui", help="start the MLflow UI for the local store (127.0.0.1 unless --host)")
    p_ui.add_argument("--store", default=None)
    p_ui.add_argument("--host", default="127.0.0.1")
    p_ui.add_argument("--port", type=int, default=5000)
    p_ui.set_defaults(func=_ui)
    args = parser.parse_args(argv)
    run_cli(lambda: args.func(args), "sweeplab")


if __name__ == "__main__":
    main()

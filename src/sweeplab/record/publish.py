"""What a run puts in MLflow besides its metrics, so the store alone holds it:
its files (config, reports, log), its model as an MLflow Model, and its
Lightning checkpoints (``logger.log_checkpoints``), which ``sweeplab-eval
<run id>`` and ``resume=<run id>`` download on a machine without the run folder.

A tracking server that stops answering does not stop the run: training goes
on, and what the server could not take (metric points, files, the model, the
final status) is kept in ``<run folder>/unsynced.json``; ``sweeplab sync <run
folder>`` sends it once the server is back. A local SQLite store has no such
outbox: its errors (a full disk) end the run with one line, as before.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeplab import redact
from sweeplab.record import checkpoints

UNSYNCED = "unsynced.json"
LOCAL_MODEL = "mlflow_model"  # the model, saved in the run folder when it could not be uploaded


_together: list[tuple[Outbox, Callable[..., Any], dict[str, float], int | None]] | None = None  # inside writes_together()


@contextlib.contextmanager
def writes_together() -> Iterator[None]:
    """The metric points runs log inside go to the store when it ends: the runs on one SQL
    store in one transaction (``tracking.write_points_together``); any other store, or a
    transaction that failed (having written nothing), through each run's own logger, as
    outside. A fused group's epoch end: one MLflow write a run cost more than its steps."""
    global _together
    if _together is not None:  # already inside
        yield
        return
    _together = []
    try:
        yield
    finally:
        entries, _together = _together, None
        _write_together(entries)


def _write_together(entries: list[tuple[Outbox, Callable[..., Any], dict[str, float], int | None]]) -> None:
    from sweeplab.record import tracking

    stores: dict[int, tuple[Any, list[int]]] = {}
    for n, (_, log, _, _) in enumerate(entries):
        store = tracking.sql_store(log.__self__) if hasattr(log, "__self__") else None
        if store is not None:
            stores.setdefault(id(store), (store, []))[1].append(n)
    direct: set[int] = set()
    now = int(time.time() * 1000)
    for store, numbers in stores.values():
        runs: list[tuple[str, list[Any]]] = []
        seen: dict[str, int] = {}
        for n in numbers:
            _, log, metrics, step = entries[n]
            logger = log.__self__
            run_id = logger.run_id
            seen[run_id] = seen.get(run_id, -1) + 1  # a run's second entry a millisecond later, as its second call would be
            runs.append((run_id, tracking.metric_points(metrics, step, getattr(logger, "_prefix", ""), now + seen[run_id])))
        try:
            tracking.write_points_together(store, runs)
            direct.update(numbers)
        except Exception:  # noqa: BLE001 - nothing was written: each run's logger sends its own, with its own errors
            pass
    for n, (outbox, log, metrics, step) in enumerate(entries):
        if n not in direct:
            outbox.log_or_keep(log, metrics, step)


class Outbox:
    """The run's MLflow client calls; on a server, what fails is kept for ``sweeplab sync``."""

    def __init__(self, client: Any, run_id: str, run_dir: Path, uri: str) -> None:
        self.client, self.run_id, self.run_dir, self.uri = client, run_id, run_dir, uri
        self.keeps = uri.startswith(("http://", "https://"))  # only a server can go away and come back
        self.failure: str | None = None  # the first error: from then on nothing is sent
        self.pending: dict[str, Any] = {"metrics": [], "artifacts": [], "model": None, "tags": {}, "status": None}
        self.sent_checkpoints: dict[Path, int] = {}  # file -> the mtime of the version uploaded
        self.held_metrics: tuple[dict[str, float], int | None] | None = None  # validation's, until training's
        self.flush_metrics: Callable[[], Any] = lambda: None
        self.described: tuple[str, dict[str, str]] | None = None  # the run's experiment and params (the logged model takes them)

    @property
    def offline(self) -> bool:
        return self.failure is not None

    def send(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Run ``call``; False when the server is gone (this call failed, or an earlier one did)."""
        if self.offline:
            return False
        try:
            call(*args, **kwargs)
            return True
        except Exception as exc:
            if not self.keeps:
                raise
            from sweeplab.errors import one_line

            self.failure = f"{what}: {one_line(exc)}"
            print(f"sweeplab-train: the tracking server stopped answering ({self.failure}); training goes on", file=sys.stderr)
            return False

    def attach(self, logger: Any, checkpoints_as_written: bool = False) -> Outbox:
        """The logger's metric points go to the outbox once the server is gone; and the
        run's status is set here, once its record is complete: Lightning's MLFlowLogger
        would mark it FINISHED when fitting ends, before the test, the model and the files.
        ``checkpoints_as_written`` (logger.log_checkpoints=all): each checkpoint file is
        uploaded when Lightning has written it, not only when the run ends."""
        log = logger.log_metrics
        logger.finalize = lambda status="success": None
        if checkpoints_as_written:
            logger.after_save_checkpoint = lambda callback: [self.checkpoint(p) for p in sorted(Path(callback.dirpath).glob("*.ckpt"))]

        def log_or_keep(metrics: dict[str, float], step: int | None = None) -> None:
            if _together is not None and not self.offline:
                _together.append((self, log, metrics, step))
            else:
                self.log_or_keep(log, metrics, step)

        def flush() -> None:
            held, self.held_metrics = self.held_metrics, None
            if held is not None:
                log_or_keep(*held)

        def one_write_an_epoch(metrics: dict[str, float], step: int | None = None) -> None:
            # Lightning logs an epoch's validation values, then at the same step its training
            # values: held and sent together, one MLflow write an epoch (4.1 vs 7.1 ms on SQLite).
            if self.held_metrics is not None and self.held_metrics[1] == step:
                metrics, self.held_metrics = {**self.held_metrics[0], **metrics}, None
            flush()  # another step's
            if metrics and all(k.startswith("val/") or k == "epoch" for k in metrics):
                self.held_metrics = (dict(metrics), step)
            else:
                log_or_keep(metrics, step)

        self.flush_metrics = flush
        logger.log_metrics = one_write_an_epoch
        return self

    def log_or_keep(self, log: Callable[..., Any], metrics: dict[str, float], step: int | None) -> None:
        """Send metric points through the logger's own ``log``; keep them if the server is gone."""
        if not self.send("metrics", log, metrics, step):
            now = int(time.time() * 1000)
            self.pending["metrics"] += [[k, float(v), int(step or 0), now] for k, v in metrics.items() if not isinstance(v, str)]

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if not self.send(f"upload {path.name}", self.client.log_artifact, self.run_id, str(path), folder):
            self.pending["artifacts"].append([str(path), folder])

    def checkpoint(self, path: Path) -> None:
        """Upload a checkpoint file unless this version of it already went up."""
        version = path.stat().st_mtime_ns
        if self.sent_checkpoints.get(path) != version:
            self.sent_checkpoints[path] = version
            self.artifact(path, checkpoints.ARTIFACT_DIR)

    def tag(self, key: str, value: str) -> None:
        if not self.send(f"tag {key}", self.client.set_tag, self.run_id, key, value):
            self.pending["tags"][key] = value

    def close(self, status: str) -> None:
        """End the run with ``status``, or keep everything for ``sweeplab sync`` and say so in one line."""
        self.flush_metrics()
        if self.send("status", self.client.set_terminated, self.run_id, status):
            return
        from sweeplab.redact import redact_uri

        self.pending["status"] = status
        path = self.run_dir / UNSYNCED
        where = redact_uri(self.uri)  # no password in the run folder: sync takes --store for that
        path.write_text(json.dumps({"tracking_uri": where, "run_id": self.run_id, "failure": self.failure, **self.pending}, indent=1))
        kept = [
            f"{len(self.pending['metrics'])} metric points",
            f"{len(self.pending['artifacts'])} files",
            *(["the model"] if self.pending["model"] else []),
            f"status {status}",
        ]
        print(
            f"sweeplab-train: not sent to {where}: {', '.join(kept)} (kept in {path}); "
            f"when the server is back: sweeplab sync {self.run_dir}",
            file=sys.stderr,
        )


def publish(cfg: DictConfig, outbox: Outbox, family: Any, run_dir: Path, files: list[Path], description: str) -> None:
    """The run's files, checkpoints and model, its description, then FINISHED: the record is complete."""
    for path in files:
        outbox.artifact(path)
    upload_checkpoints(cfg, outbox, run_dir)
    if cfg.logger.get("log_model", True):
        log_run_model(cfg, outbox, family, run_dir)
    for key, value in getattr(family, "run_tags", {}).items():  # e.g. sweeplab.pruned
        outbox.tag(key, value)
    outbox.tag("mlflow.note.content", description)
    outbox.close("FINISHED")


def upload_checkpoints(cfg: DictConfig, outbox: Outbox, run_dir: Path, interrupted: bool = False) -> None:
    for path in checkpoints.to_upload(run_dir, str(cfg.logger.get("log_checkpoints", "best")), interrupted):
        outbox.checkpoint(path)


def log_run_model(cfg: DictConfig, outbox: Outbox, family: Any, run_dir: Path) -> None:
    """The trained model under ``runs:/<run id>/model`` (see sweeplab.record.model), or a
    tag ``sweeplab.model`` saying why a run of this kind has none."""
    from sweeplab.record import model as serving

    served = getattr(family, "served_model", lambda: None)()
    if served and hasattr(family, "serving_spec"):  # an agent: its policy, from observations
        spec = family.serving_spec(served[1])
        example = family.serving_example(spec)
    else:
        spec = serving.serving_spec(family.datamodule, family.task, served[1]) if served else None
        example = serving.input_example(family.datamodule, spec) if spec else None
    if spec is not None and spec["task"] == "clustering" and not hasattr(served[0], "predict"):
        spec, why = None, f"{type(served[0]).__name__} clusters each data set on its own: no model to apply to new rows"
    elif spec is None:
        why = "word vectors keep their own files (vectors.txt); no MLflow Model" if served else f"a {family.kind} run has no MLflow Model"
    if spec is None:
        outbox.tag("sweeplab.model", why)
        return
    tokenizer = getattr(family.datamodule, "tokenizer", None) if spec["text"] else None
    if outbox.send("the model", serving.log_model, outbox.uri, outbox.run_id, served[0], spec, example, tokenizer, outbox.described):
        outbox.tag("sweeplab.model", f"runs:/{outbox.run_id}/{serving.MODEL_NAME}")
    else:  # saved in the run folder; sync logs it
        local = run_dir / LOCAL_MODEL
        serving.save_local(local, served[0], spec, example, tokenizer)
        outbox.pending["model"] = str(local)


def log_points_the_checkpoint_holds(client: Any, run_id: str, checkpoint: Path) -> int:
    """On resume: the last epoch's values the checkpoint carries that the run's history lacks (its
    process ended after the checkpoint, before the write) are logged; returns how many."""
    from mlflow.entities import Metric

    held = checkpoints.epoch_points(checkpoint)
    if held is None:
        return 0
    step, values = held
    now = int(time.time() * 1000)
    missing = [
        Metric(key=k, value=v, timestamp=now, step=step)
        for k, v in values.items()
        if step not in {m.step for m in client.get_metric_history(run_id, k)}
    ]
    if missing:
        client.log_batch(run_id, metrics=missing)
        print(f"sweeplab-train: resume: {len(missing)} values of the checkpoint's epoch were not in the run; logged them")
    return len(missing)


def sync(run_dir: Path, store: str | None = None) -> None:
    """``sweeplab sync <run folder> [--store URI]``: send what a run kept while its server was gone, then close it."""
    from mlflow.tracking import MlflowClient

    from sweeplab.record import model as serving
    from sweeplab.record import tracking

    path = Path(run_dir) / UNSYNCED
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder (give the folder the training command printed)")
    if not path.is_file():  # a second sync, or a run whose server never went away: done, as rsync says
        print(f"sweeplab sync: {run_dir}: nothing to sync (no {UNSYNCED}: the run's record is complete)")
        return
    try:
        pending = json.loads(path.read_text())
        if not isinstance(pending, dict) or not {"run_id", "tracking_uri", "metrics"} <= pending.keys():
            raise ValueError("it lacks run_id, tracking_uri or metrics")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path}: not a record sweeplab wrote ({exc}); it was cut short or edited, so nothing was sent. "
            "The run's points are lost from it; its checkpoints and files are still in the run folder"
        ) from None
    uri, run_id = store or pending["tracking_uri"], pending["run_id"]
    if redact.MASK in uri.split("@")[0]:
        raise ValueError(f"{path}: the run's server is {uri}; give it with its password: sweeplab sync {run_dir} --store <uri>")
    tracking.check_server(uri, key="sweeplab sync: ")
    client = MlflowClient(uri)
    from mlflow.entities import Metric

    points = [Metric(key=k, value=v, timestamp=t, step=s) for k, v, s, t in pending["metrics"]]
    # A write cut off mid-request may have reached the server though its answer did not come back:
    # a point whose step the run's history already has is not sent twice.
    stored = {key: {m.step for m in client.get_metric_history(run_id, key)} for key in {p.key for p in points}}
    fresh = [p for p in points if p.step not in stored[p.key]]
    for start in range(0, len(fresh), 1000):  # MLflow's log_batch limit
        client.log_batch(run_id, metrics=fresh[start : start + 1000])
    for local, folder in pending["artifacts"]:
        client.log_artifact(run_id, local, folder)
    if pending["model"]:
        serving.log_saved_model(uri, run_id, Path(pending["model"]))
        client.set_tag(run_id, "sweeplab.model", f"runs:/{run_id}/{serving.MODEL_NAME}")
    for key, value in pending["tags"].items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, pending["status"])
    path.rename(path.with_suffix(".synced.json"))  # kept, renamed: a second sync has nothing to send
    print(
        f"sweeplab sync: run {run_id}: {len(fresh)} metric points"
        + (f" ({len(points) - len(fresh)} already on the server)" if len(fresh) < len(points) else "")
        + f", {len(pending['artifacts'])} files"
        f"{', the model' if pending['model'] else ''} sent; status {pending['status']}"
    )

"""What a run puts in MLflow besides its metrics, so the store alone holds it:
its files (config, reports, log), its model as an MLflow Model, and its
Lightning checkpoints (``logger.log_checkpoints``), which ``sweeplab-eval
<run id>`` and ``resume=<run id>`` download on a machine without the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeplab import checkpoints


def publish(cfg: DictConfig, logger: Any, run_id: str, family: Any, run_dir: Path, files: list[Path]) -> None:
    client = logger.experiment
    for path in files:
        client.log_artifact(run_id, str(path))
    upload_checkpoints(cfg, client, run_id, run_dir)
    if cfg.logger.get("log_model", True):
        log_run_model(cfg, client, run_id, family)


def upload_checkpoints(cfg: DictConfig, client: Any, run_id: str, run_dir: Path, interrupted: bool = False) -> list[Path]:
    which = str(cfg.logger.get("log_checkpoints", "best"))
    files = checkpoints.to_upload(run_dir, which, interrupted)
    for path in files:
        client.log_artifact(run_id, str(path), checkpoints.ARTIFACT_DIR)
    return files


def log_run_model(cfg: DictConfig, client: Any, run_id: str, family: Any) -> None:
    """The trained model under ``runs:/<run id>/model`` (see sweeplab.serving), or a
    tag ``sweeplab.model`` saying why a run of this kind has none."""
    from sweeplab import serving, tracking

    served = getattr(family, "served_model", lambda: None)()
    spec = serving.serving_spec(family.datamodule, family.task, served[1]) if served else None
    if spec is not None and spec["task"] == "clustering" and not hasattr(served[0], "predict"):
        spec, why = None, f"{type(served[0]).__name__} clusters each data set on its own: no model to apply to new rows"
    elif spec is None:
        why = "word vectors and text models keep their files; no MLflow Model" if served else f"a {family.kind} run has no MLflow Model"
    if spec is None:
        client.set_tag(run_id, "sweeplab.model", why)
        return
    model = served[0]
    example = serving.input_example(family.datamodule, spec)
    serving.log_model(tracking.tracking_uri(cfg), run_id, model, spec, example)
    client.set_tag(run_id, "sweeplab.model", f"runs:/{run_id}/{serving.MODEL_NAME}")

"""sweeplab-eval: re-test a trained run from its MLflow run id or a checkpoint.

    sweeplab-eval <mlflow run id>           # its logged config + best checkpoint
    sweeplab-eval path/to/checkpoints/best.ckpt

The model and data are rebuilt from the run folder's config.yaml, the
checkpoint is loaded weights-only, and the test metrics are logged to the
same MLflow run as ``eval/test/...`` (with a ``sweeplab.evaluated_ckpt`` tag)
rather than to a stray new run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf, open_dict


def _is_checkpoint(target: str) -> bool:
    return Path(target).suffix == ".ckpt" or Path(target).exists()


def _locate(target: str, store: str) -> tuple[str | None, Path, Path]:
    """(run id or None, run folder, checkpoint) for a run id or a checkpoint path."""
    from sweeplab import redact

    path = Path(target)
    if _is_checkpoint(target):
        if not path.exists():
            raise FileNotFoundError(f"{target}: no such checkpoint file")
        run_dir = path.resolve().parent.parent
        if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
            return None, run_dir, path  # no store here: nothing to log into (and none is created)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(store)
        matches = [
            r
            for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id], filter_string=f"tags.`sweeplab.run_dir` = '{run_dir}'", max_results=1)
        ]
        return (matches[0].info.run_id if matches else None), run_dir, path
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(store).get_run(target)
    except Exception:
        raise ValueError(f"{target}: neither a checkpoint file nor an MLflow run id in {redact.redact_uri(store)}") from None
    if run.data.tags.get("sweeplab.model_kind") == "classical":
        raise ValueError(f"run {target} is a fit-once run (scikit-learn, or gensim's Word2Vec): it has no checkpoint to re-test")
    if run.data.tags.get("sweeplab.model_kind") == "rl":
        raise ValueError(
            f"run {target} is a reinforcement-learning run: its greedy policy was scored after training (test/*); "
            "for more episodes train it again with a larger agent.eval_episodes"
        )
    from sweeplab.record.checkpoints import TESTED, fetch

    run_dir = Path(run.data.tags.get("sweeplab.run_dir", ""))
    for name in TESTED:
        if run_dir.name and (run_dir / "checkpoints" / name).exists():
            print(f"checkpoint: {run_dir / 'checkpoints' / name} (the run folder on this machine)")
            return target, run_dir, run_dir / "checkpoints" / name
    # Not on this machine (trained elsewhere, or its folder deleted): the run's artifacts hold it.
    client = MlflowClient(store)
    local = Path("outputs") / "downloads" / target
    checkpoint = fetch(client, target, TESTED, local)
    if checkpoint is None:
        raise FileNotFoundError(
            f"run {target}: no checkpoint under {run_dir / 'checkpoints'} nor among its artifacts "
            "(trained with callbacks=none or logger.log_checkpoints=none?)"
        )
    client.download_artifacts(target, "config.yaml", str(local))
    print(f"checkpoint: {checkpoint} (downloaded from the run's artifacts: {run_dir} is not on this machine)")
    return target, local, checkpoint


def evaluate(target: str, store: str | None = None, accelerator: str | None = None) -> dict[str, float]:
    import hydra

    from sweeplab.record import tracking
    from sweeplab.record.checkpoints import load_checkpoint

    explicit = store is not None
    store = store or tracking.default_tracking_uri()
    if explicit or not _is_checkpoint(target):  # a checkpoint alone needs no store: its run is only looked up to log into
        store = tracking.existing_store(store)
    run_id, run_dir, ckpt_path = _locate(target, store)
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        if ckpt_path.resolve().parent.name != "checkpoints":
            raise FileNotFoundError(
                f"{ckpt_path}: not inside a sweeplab run folder (<run folder>/checkpoints/*.ckpt), so there is no "
                "config.yaml to rebuild its model and data from; give the run id, or the checkpoint in its run folder"
            )
        raise FileNotFoundError(f"{config_file}: the run's config is missing; cannot rebuild its model and data")
    # Lightning (5 s of imports) only once the target is known to be a run: a bad one is refused at once.
    from sweeplab.families.base import quiet_lightning
    from sweeplab.families.torch.family import build_module, build_trainer
    from sweeplab.record.identity import upgrade_targets

    quiet_lightning()
    cfg = upgrade_targets(OmegaConf.load(config_file))  # a run saved by an earlier version names classes where they were
    with open_dict(cfg):
        cfg.callbacks = None
        weights = cfg.model.get("weights")
        # The checkpoint holds the trained weights and the original file may be gone; a
        # pre-trained text model's folder stays: its config.json is the architecture.
        if weights and not Path(str(weights)).expanduser().is_dir():
            cfg.model.weights = None
        if accelerator:
            cfg.trainer.accelerator = accelerator
    checkpoint = load_checkpoint(ckpt_path, key="checkpoint")

    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup()
    module, trainer = build_module(cfg, datamodule), build_trainer(cfg, [], run_dir)
    module.load_state_dict(checkpoint["state_dict"])
    from sweeplab.families.torch.module import LightningData
    from sweeplab.start_up import collector_back_on

    collector_back_on()
    trainer.test(module, datamodule=LightningData(datamodule), verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    if module.task.value == "embedding":  # word vectors: their benchmark scores, as at the end of training
        metrics.update(module.net.evaluate(run_dir)[0])

    if run_id:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(store)
        for key, value in metrics.items():
            client.log_metric(run_id, f"eval/{key}", value)
        client.set_tag(run_id, "sweeplab.evaluated_ckpt", str(ckpt_path))

    from rich.console import Console
    from rich.table import Table

    table = Table(title="test metrics")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for key in sorted(metrics):
        table.add_row(key, f"{metrics[key]:.6f}")
    console = Console()
    console.print(f"re-test of {'run ' + run_id if run_id else ckpt_path}", soft_wrap=True)
    console.print(table)
    if run_id:
        print(f"logged to MLflow run {run_id} as eval/test/*")
    return metrics


def main(argv: list[str] | None = None) -> None:
    """Console script ``sweeplab-eval``."""
    from sweeplab.errors import run_cli
    from sweeplab.start_up import pause_collector_for_start_up

    pause_collector_for_start_up()
    parser = argparse.ArgumentParser(prog="sweeplab-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="an MLflow run id, or a .ckpt file inside a run folder")
    parser.add_argument("--store", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI or ./outputs/mlflow.db)")
    parser.add_argument("--accelerator", default=None, help="override the run's trainer.accelerator (e.g. cpu)")
    args = parser.parse_args(argv)
    run_cli(lambda: evaluate(args.target, args.store, args.accelerator), "sweeplab-eval")


if __name__ == "__main__":
    main()

"""The model-zoo presets run end to end through the console script (shortened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import cli, runs_of

pytestmark = pytest.mark.slow
SHORT = ["trainer.max_epochs=1", "callbacks=none", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def test_rnn_lstm_gru_preset_runs_every_cell_and_seed(tmp_path: Path) -> None:
    result = cli(["experiment=rnn_lstm_gru_sunspots", *SHORT, f"paths.outputs={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "rnn_lstm_gru_sunspots")
    assert (runs["status"] == "FINISHED").all() and len(runs) == 9
    assert sorted(zip(runs["params.model.cell"], runs["params.seed"])) == [(c, s) for c in ("gru", "lstm", "rnn") for s in "123"]
    assert runs["metrics.test/mse"].notna().all()


def test_autoencoder_vs_pca_preset_uses_the_same_components(tmp_path: Path) -> None:
    result = cli(["experiment=autoencoder_vs_pca", *SHORT, f"paths.outputs={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "autoencoder_vs_pca")
    assert len(runs) == 8 and (runs["status"] == "FINISHED").all()
    # model.latent_size and model.n_components are ${components}: logged once, under the key the sweep sets.
    assert sorted(runs["params.components"].astype(int)) == [4, 4, 8, 8, 16, 16, 32, 32]
    assert not [c for c in runs.columns if c in ("params.model.latent_size", "params.model.n_components")]
    assert (runs["tags.sweeplab.task"] == "reconstruction").all() and runs["metrics.test/mse"].notna().all()


def test_finetune_preset_needs_weights_and_trains_the_head_from_a_file(tmp_path: Path) -> None:
    import torch
    from torchvision.models import resnet18

    missing = cli(["experiment=finetune_resnet18", f"paths.outputs={tmp_path}"], cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == (
        "sweeplab-train: error: model.weights=<the pre-trained weights file> is required here; add it to the command line"
    )
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18(num_classes=1000).state_dict(), weights)  # an ImageNet-shaped file: the head is swapped
    result = cli(["experiment=finetune_resnet18", f"model.weights={weights}", *SHORT, f"paths.outputs={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resnet18 backbone loaded from" in result.stdout and "(1000 outputs in the file, 10 for this data)" in result.stdout
    run = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "finetune_resnet18").iloc[0]
    assert run["status"] == "FINISHED" and run["params.model.freeze_backbone"] == "True"

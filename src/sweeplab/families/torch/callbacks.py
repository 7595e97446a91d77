"""Lightning callbacks sweeplab adds to the ones Lightning ships."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.nn.modules.batchnorm import _BatchNorm


class PreciseBatchNorm(pl.Callback):
    """Re-estimate BatchNorm running statistics before each validation.

    During training, BatchNorm keeps running means and variances with
    momentum 0.1, so they describe the weights of the last few dozen steps.
    On small data there are only a few steps (a 60-image folder at batch 32
    trains 20 steps in 10 epochs), and a deep BatchNorm network such as
    MobileNetV2 (52 BatchNorm layers) validates and tests with statistics of
    weights it no longer has: predictions collapse to one class although the
    same network scores perfectly on batch statistics. Before each validation
    this callback recomputes the statistics as an exact average over
    ``num_batches`` training batches (forward passes only, no gradients), so
    validation, checkpoint choice and the test all see statistics of the
    current weights. BatchNorm layers that do not train (a frozen pre-trained
    backbone) keep theirs. Models without BatchNorm cost nothing.
    """

    def __init__(self, num_batches: int = 4) -> None:
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
            raise ValueError(f"callbacks.precise_bn.num_batches={num_batches!r}: must be a positive integer")
        self.num_batches = num_batches

    @staticmethod
    def trainable_batch_norms(module: torch.nn.Module) -> list[_BatchNorm]:
        return [
            m
            for m in module.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and all(p.requires_grad for p in m.parameters(recurse=False))
        ]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        norms = self.trainable_batch_norms(pl_module)
        if trainer.sanity_checking or not norms or trainer.datamodule is None:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch below weighs the same
            m.train()
        try:
            # fork_rng: drawing shuffled batches here must not change the training's own random stream.
            with torch.random.fork_rng(devices=[]), torch.no_grad(), trainer.precision_plugin.forward_context():
                for i, batch in enumerate(trainer.datamodule.train_dataloader()):
                    if i == self.num_batches:
                        break
                    x = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)[0]
                    pl_module(x)
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
                m.eval()

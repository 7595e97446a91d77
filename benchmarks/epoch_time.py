"""Per-epoch time: a sweeplab run (4 metrics, MLflow on) vs a hand-written loop.

Both train the same MLP on the same split with the same batch size and
thread count, and both compute loss, accuracy, precision, recall and F1 on
train and validation every epoch; the hand loop computes them by hand from a
confusion matrix. An epoch is timed from one training-epoch start to the
next (training, validation and logging included); the first epoch is
dropped as warm-up. Reports the median per-epoch ratio (target <= 1.15) and
training images (rows) per second.

A third measurement splits the residue: Lightning's own loop with nothing
added ("floor": a LightningModule whose steps only compute the loss, no
metrics, no logger, no callbacks, same data, network, optimizer and
``deterministic`` setting). sweeplab / floor is what sweeplab adds (metrics,
logging, MLflow); floor / hand is what Lightning's automatic loop costs.

    python benchmarks/epoch_time.py                      # digits and a larger moons set
    python benchmarks/epoch_time.py --epochs 20 --threads 2
    # the ResNet preset on a GPU, bf16 mixed precision, both sides on the same device:
    python benchmarks/epoch_time.py --model resnet18 --accelerator gpu --precision bf16-mixed --batch-size 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweeplab.config import compose  # noqa: E402
from sweeplab.train import run  # noqa: E402

import bench_callbacks  # noqa: E402


def sweeplab_epochs(overrides: list[str], epochs: int, outputs: Path) -> list[float]:
    bench_callbacks.EPOCH_STARTS.clear()
    cfg = compose(
        [
            *overrides,
            f"trainer.max_epochs={epochs}",
            "callbacks=none",
            f"paths.outputs={outputs}",
            "+callbacks.timer._target_=bench_callbacks.EpochTimer",
            "trainer.enable_model_summary=false",
        ],
        run_dir=outputs / "run",
    )
    run(cfg)
    starts = bench_callbacks.EPOCH_STARTS
    return [b - a for a, b in zip(starts, starts[1:])]


def _macro_scores(confusion: torch.Tensor, binary: bool) -> tuple[float, float, float, float]:
    tp = confusion.diag().double()
    fp = confusion.sum(0).double() - tp
    fn = confusion.sum(1).double() - tp
    accuracy = (tp.sum() / confusion.sum()).item()
    precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros_like(tp))
    if binary:
        return accuracy, precision[1].item(), recall[1].item(), f1[1].item()
    present = (tp + fp + fn) > 0
    return accuracy, precision[present].mean().item(), recall[present].mean().item(), f1[present].mean().item()


def hand_loop_epochs(overrides: list[str], epochs: int, accelerator: str = "cpu", precision: str = "32-true") -> list[float]:
    """Plain PyTorch: same data module, same network builder, same optimizer settings,
    same device and precision (bf16-mixed = autocast to bfloat16)."""
    import hydra

    device = torch.device("cuda" if accelerator in ("gpu", "cuda") else "cpu")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    cfg = compose([*overrides, f"trainer.max_epochs={epochs}"])
    torch.manual_seed(cfg.seed)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    binary = dm.task.value == "binary"
    n_classes = 2 if binary else dm.num_classes
    net = hydra.utils.instantiate(cfg.model, input_shape=dm.input_shape, num_outputs=dm.num_outputs).to(device)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(net.parameters())
    loss_fn = torch.nn.BCEWithLogitsLoss() if binary else torch.nn.CrossEntropyLoss()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    history = []
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for stage, loader in (("train", train), ("val", val)):
            net.train(stage == "train")
            confusion = torch.zeros(n_classes, n_classes, dtype=torch.long, device=device)
            total, count = 0.0, 0
            with torch.set_grad_enabled(stage == "train"):
                for x, y in loader:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    with autocast:
                        out = net(x)
                        loss = loss_fn(out.reshape(-1), y.float()) if binary else loss_fn(out, y)
                    if stage == "train":
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    preds = (out.reshape(-1) > 0).long() if binary else out.argmax(-1)
                    confusion += torch.bincount(y * n_classes + preds.detach(), minlength=n_classes**2).reshape(n_classes, n_classes)
                    total += loss.item() * len(y)
                    count += len(y)
            history.append((stage, total / count, *_macro_scores(confusion.cpu(), binary)))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def lightning_floor_epochs(overrides: list[str], epochs: int, accelerator: str = "cpu", precision: str = "32-true") -> list[float]:
    """Lightning's automatic loop around the same network, data and optimizer, and nothing else."""
    import hydra
    import lightning.pytorch as pl

    from sweeplab.families.torch.module import LightningData

    cfg = compose([*overrides, f"trainer.max_epochs={epochs}"])
    torch.manual_seed(cfg.seed)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    binary = dm.task.value == "binary"
    net = hydra.utils.instantiate(cfg.model, input_shape=dm.input_shape, num_outputs=dm.num_outputs)
    optimizer = hydra.utils.instantiate(cfg.optimizer)

    class Floor(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def _loss(self, batch):
            x, y = batch
            out = self.net(x)
            if binary:
                return torch.nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), y.float())
            return torch.nn.functional.cross_entropy(out, y)

        def training_step(self, batch, batch_idx):
            return self._loss(batch)

        def validation_step(self, batch, batch_idx):
            self._loss(batch)

        def configure_optimizers(self):
            return optimizer(self.parameters())

    bench_callbacks.EPOCH_STARTS.clear()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        deterministic=cfg.trainer.deterministic,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[bench_callbacks.EpochTimer()],
    )
    trainer.fit(Floor(), datamodule=LightningData(dm))
    starts = bench_callbacks.EPOCH_STARTS
    return [b - a for a, b in zip(starts, starts[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--model", default=None, help="a conf/model option (default: the two MLP cases)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--accelerator", default="cpu", help="cpu | gpu: both sides run there")
    parser.add_argument("--precision", default="32-true", help="32-true | bf16-mixed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        batch = [f"data.batch_size={args.batch_size}"] if args.batch_size else []
        cases = {f"{args.model} on {args.data}": [f"model={args.model}", f"data={args.data}", *batch]}
    else:
        cases = {
            "digits (1257 train rows, batch 64, 20 steps/epoch)": ["data=digits"],
            "moons 100k (70k train rows, batch 256, 274 steps/epoch)": ["data=moons", "data.n_samples=100000", "data.batch_size=256"],
        }
    device = [f"trainer.accelerator={args.accelerator}", f"trainer.precision={args.precision}"]
    print(f"threads={args.threads}, epochs={args.epochs} (first dropped), {args.accelerator}, {args.precision}, MLflow on (SQLite)")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(cases.items()):
            n_train = _train_rows(overrides)
            ours = statistics.median(sweeplab_epochs([*overrides, *device], args.epochs, Path(tmp) / str(i))[1:])
            hand = statistics.median(hand_loop_epochs(overrides, args.epochs, args.accelerator, args.precision)[1:])
            floor = statistics.median(lightning_floor_epochs(overrides, args.epochs, args.accelerator, args.precision)[1:])
            print(
                f"{name}: sweeplab {ours * 1000:.1f} ms/epoch ({n_train / ours:.0f} train rows/s), "
                f"hand loop {hand * 1000:.1f} ms/epoch ({n_train / hand:.0f} rows/s), ratio {ours / hand:.2f} (target <= 1.15)\n"
                f"    Lightning's loop alone {floor * 1000:.1f} ms/epoch: Lightning {floor / hand:.2f}x the hand loop, "
                f"sweeplab's metrics, logging and MLflow {ours / floor:.2f}x Lightning's loop"
            )


def _train_rows(overrides: list[str]) -> int:
    import hydra

    dm = hydra.utils.instantiate(compose(overrides).data)
    return len(dm.arrays("train")[1])


if __name__ == "__main__":
    main()

"""torchvision architectures: adaptation to the data, offline weight loading,
head swap, frozen backbone, backbone/head learning rates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweeplab.config import compose
from sweeplab.families.torch.module import LightningData
from sweeplab.models.zoo import ARCHITECTURES, TorchvisionNet

from conftest import FAST, runs_of, saved_predictions, store_overrides, train_in_process

SHORT = [*FAST, "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]


@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-layout MobileNetV2 state dict with 7 classes and marked values."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    net = mobilenet_v2(num_classes=7)
    with torch.no_grad():
        net.features[0][0].weight.fill_(0.125)
        net.classifier[1].bias.fill_(3.0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_7.pth"
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("shape", [(1, 8, 8), (4, 20, 20)], ids=["grey8", "4ch20"])
def test_every_architecture_adapts_to_channels_size_and_classes(arch: str, shape: tuple[int, ...]) -> None:
    net = TorchvisionNet(shape, num_outputs=5, arch=arch).eval()
    with torch.no_grad():
        out = net(torch.randn(2, *shape))
    assert out.shape == (2, 5)
    assert net.adapter.size == ARCHITECTURES[arch][1]  # resized up to the architecture's minimum
    assert (net.adapter.conv is None) == (shape[0] == 1)  # grey repeated, 4 channels through a 1x1 conv


def test_large_enough_images_are_not_resized_and_bad_shapes_are_refused() -> None:
    assert TorchvisionNet((3, 64, 64), 3, arch="resnet18").adapter.size is None
    with pytest.raises(ValueError, match=r"image-shaped samples.*\(30,\)"):
        TorchvisionNet((30,), 3, arch="resnet18")
    with pytest.raises(ValueError, match=r"model.resize_to=null: 8x8 images are smaller than alexnet takes \(64 px"):
        TorchvisionNet((1, 8, 8), 3, arch="alexnet", resize_to=None)
    with pytest.raises(ValueError, match="model.resize_to=16: auto, null .* >= 32 for vgg11"):
        TorchvisionNet((1, 8, 8), 3, arch="vgg11", resize_to=16)
    assert TorchvisionNet((1, 8, 8), 3, arch="resnet18", resize_to=48).adapter.size == 48
    with pytest.raises(ValueError, match="model.arch='resnet9': choose one of alexnet, resnet18"):
        TorchvisionNet((1, 8, 8), 3, arch="resnet9")


def test_weights_file_loads_backbone_and_swaps_the_head(mobilenet_file) -> None:
    path, state = mobilenet_file
    net = TorchvisionNet((1, 8, 8), num_outputs=10, arch="mobilenet_v2", weights=str(path))
    backbone = net.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier.1."):
            assert torch.equal(backbone[key], value), key
    assert net.head.out_features == 10 and not torch.all(net.head.bias == 3.0)  # new head for 10 classes

    same = TorchvisionNet((3, 32, 32), num_outputs=7, arch="mobilenet_v2", weights=str(path))
    assert torch.equal(same.head.bias, state["classifier.1.bias"])  # head kept when its shape fits
    fresh = TorchvisionNet((3, 32, 32), num_outputs=7, arch="mobilenet_v2", weights=str(path), reset_head=True)
    assert not torch.equal(fresh.head.bias, state["classifier.1.bias"])
    assert torch.equal(fresh.backbone.features[0][0].weight, state["features.0.0.weight"])


def test_weights_from_a_sweeplab_checkpoint_layout(mobilenet_file, tmp_path: Path) -> None:
    path, state = mobilenet_file
    first = TorchvisionNet((1, 8, 8), num_outputs=10, arch="mobilenet_v2", weights=str(path))
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in first.state_dict().items()}, "epoch": 3}, ckpt)
    second = TorchvisionNet((1, 8, 8), num_outputs=10, arch="mobilenet_v2", weights=str(ckpt))
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


def test_wrong_or_missing_weights_give_clear_errors(mobilenet_file, tmp_path: Path, monkeypatch) -> None:
    path, _ = mobilenet_file
    with pytest.raises(ValueError, match=f"model.weights={path} does not fit resnet18"):
        TorchvisionNet((1, 8, 8), 10, arch="resnet18", weights=str(path))
    with pytest.raises(FileNotFoundError, match="no such file"):
        TorchvisionNet((1, 8, 8), 10, arch="resnet18", weights=str(tmp_path / "nope.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as info:
        TorchvisionNet((1, 8, 8), 10, arch="resnet18", weights="IMAGENET1K_V1")
    assert str(expected) in str(info.value) and "model.download_weights=true" in str(info.value)
    with pytest.raises(ValueError, match="names: DEFAULT, IMAGENET1K_V1"):
        TorchvisionNet((1, 8, 8), 10, arch="resnet18", weights="IMAGENET9K")
    pickled = tmp_path / "code.pth"
    torch.save({"layer": torch.nn.Linear(2, 2)}, pickled)  # a whole module: needs unpickling code
    with pytest.raises(ValueError, match="refused"):
        TorchvisionNet((1, 8, 8), 10, arch="resnet18", weights=str(pickled))


def test_weight_names_resolve_from_the_local_torch_cache(mobilenet_file, tmp_path: Path, monkeypatch) -> None:
    from torchvision.models import MobileNet_V2_Weights

    path, state = mobilenet_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(MobileNet_V2_Weights.DEFAULT.url).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    for name in ("DEFAULT", "MobileNet_V2_Weights.IMAGENET1K_V2"):
        net = TorchvisionNet((3, 32, 32), 10, arch="mobilenet_v2", weights=name)
        assert torch.equal(net.backbone.features[0][0].weight, state["features.0.0.weight"])


def test_weight_download_without_a_network_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConnectionError, match=r"model.weights=DEFAULT: download of https://\S+resnet18-f37072fd.pth failed"):
        TorchvisionNet((1, 8, 8), 10, arch="resnet18", weights="DEFAULT", download_weights=True)


def _built(overrides: list[str], tmp_path: Path):
    import hydra

    from sweeplab.families.base import quiet_lightning
    from sweeplab.families.torch.family import build_module, build_trainer

    quiet_lightning()
    cfg = compose(["data=digits", "data.batch_size=32", *SHORT, "logger=none", *overrides], run_dir=tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup()
    module, trainer = build_module(cfg, dm), build_trainer(cfg, None, tmp_path)
    return module, trainer, dm


def test_frozen_backbone_is_unchanged_after_training_and_the_head_learns(mobilenet_file, tmp_path: Path) -> None:
    path, state = mobilenet_file
    module, trainer, dm = _built(["model=mobilenet_v2", f"model.weights={path}", "model.freeze_backbone=true"], tmp_path)
    head_before = {k: v.clone() for k, v in module.net.head.state_dict().items()}
    trainer.fit(module, datamodule=LightningData(dm))
    assert trainer.global_step == 2
    after = module.net.backbone.state_dict()
    for key, value in state.items():  # parameters and BatchNorm statistics alike
        if not key.startswith("classifier.1."):
            assert torch.equal(after[key], value), key
    assert not torch.equal(module.net.head.weight, head_before["weight"])
    assert all(not p.requires_grad for p in module.net.backbone.parameters())


def test_backbone_and_head_get_their_own_learning_rates(tmp_path: Path) -> None:
    module, _, _ = _built(["model=resnet18", "optimizer.lr=0.01", "param_groups=[{params: backbone, lr: 0.0001}]"], tmp_path)
    optimizer = module.configure_optimizers()
    groups = {round(g["lr"], 6): sum(p.numel() for p in g["params"]) for g in optimizer.param_groups}
    head = sum(p.numel() for p in module.net.head.parameters())
    backbone = sum(p.numel() for p in module.net.backbone.parameters())
    assert groups == {0.01: head, 0.0001: backbone}

    frozen, _, _ = _built(["model=resnet18", "model.freeze_backbone=true", "param_groups=[{params: backbone, lr: 0.0001}]"], tmp_path)
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        frozen.configure_optimizers()


@pytest.mark.slow
@pytest.mark.parametrize("model", list(ARCHITECTURES))
def test_each_torchvision_model_trains_a_short_epoch_into_mlflow(model: str, tmp_path: Path, store) -> None:
    metrics = train_in_process([f"model={model}", "data.batch_size=32", *SHORT, *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.sweeplab.task"] == "multiclass"
    for name in ("accuracy", "precision", "recall", "f1"):
        assert run[f"metrics.test/{name}"] == pytest.approx(metrics[f"test/{name}"])
    assert run["params.model.arch"] == model
    # Right, not just present: the logged values are scikit-learn's on the saved predictions.
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = saved_predictions(tmp_path / "run")
    assert run["metrics.test/accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-6)
    assert run["metrics.test/f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", labels=range(10), zero_division=0), abs=1e-6)

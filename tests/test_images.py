"""Image data beyond digits: image folders, MNIST / Fashion-MNIST / CIFAR-10 from a
local root. Every file here is generated in a temporary folder."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from sweeplab.config import compose

from conftest import FAST, runs_of, store_overrides, train_in_process

SHORT = [*FAST, "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]


def make_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 6, size=(12, 10)) -> Path:
    """Each class a different colour, with noise; mixed formats and one nested folder."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        (folder / "more").mkdir(parents=True)
        for i in range(per_class):
            base = np.zeros((*size[::-1], 3), dtype=np.int16)
            base[..., c % 3] = 200
            pixels = np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)
            target = folder / "more" if i == 0 else folder
            Image.fromarray(pixels).save(target / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "cat" / "notes.txt").write_text("not an image")  # ignored by extension
    return root


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """The MNIST file format (IDX): big-endian magic, sizes, then uint8 data."""
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, rows, cols) + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.astype(np.uint8).tobytes())


def make_mnist(root: Path, name: str = "MNIST", n_train: int = 60, n_test: int = 20) -> Path:
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 50, (n, 28, 28))
        images[np.arange(n), labels, :] = 255  # a class-dependent bright row
        write_idx(root / name / "raw", prefix, images, labels)
    return root


def make_cifar10(root: Path, per_batch: int = 20) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8), "labels": list(np.arange(per_batch) % 10)}
        (folder / name).write_bytes(pickle.dumps(entry))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


def _datamodule(overrides: list[str], tmp_path: Path):
    import hydra

    dm = hydra.utils.instantiate(compose(overrides, run_dir=tmp_path).data)
    dm.setup()
    return dm


def test_image_folder_loads_classes_shapes_and_a_stratified_split(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "pets")
    dm = _datamodule(["data=image_folder", f"data.root={root}", "data.image_size=16"], tmp_path)
    assert dm.class_names == ["cat", "dog", "fox"]
    assert dm.input_shape == (3, 16, 16) and dm.num_classes == 3
    sizes = {s: len(dm.arrays(s)[1]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 18  # the nested image counts, notes.txt does not
    assert set(dm.arrays("test")[1]) == {0, 1, 2}  # stratified: every class in test
    # The colour that marks each class survives loading: channel c is brightest for class c.
    x, y = dm.arrays("train")
    assert all(int(np.argmax(x[i].mean(axis=(1, 2)))) == y[i] for i in range(len(y)))

    grey = _datamodule(["data=image_folder", f"data.root={root}", "data.channels=1", "data.image_size=8"], tmp_path)
    assert grey.input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: (root / "only").mkdir(parents=True), "needs at least 2 class folders"),
        (lambda root: (make_image_folder(root, per_class=3), (root / "fox" / "9.png").write_bytes(b"garbage")), "cannot read image"),
    ],
    ids=["missing-root", "one-class", "corrupt-image"],
)
def test_image_folder_errors_name_the_problem(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "imgs"
    setup(root)
    with pytest.raises((FileNotFoundError, ValueError), match=message) as info:
        _datamodule(["data=image_folder", f"data.root={root}"], tmp_path)
    assert str(root) in str(info.value)


def test_image_folder_trains_and_lands_in_mlflow(tmp_path: Path, store) -> None:
    root = make_image_folder(tmp_path / "pets")
    metrics = train_in_process(
        [
            "data=image_folder",
            f"data.root={root}",
            "data.image_size=16",
            "model=cnn",
            "trainer.max_epochs=1",
            "callbacks=none",
            *store_overrides(store),
        ],
        tmp_path / "run",
    )
    runs = runs_of(store["uri"])
    assert runs.iloc[0]["status"] == "FINISHED"
    assert runs.iloc[0]["metrics.test/accuracy"] == pytest.approx(metrics["test/accuracy"])


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_style_data_from_a_local_root(tmp_path: Path, name: str, folder: str) -> None:
    root = make_mnist(tmp_path / "data", folder)
    dm = _datamodule([f"data={name}", f"data.root={root}", "data.val_fraction=0.2"], tmp_path)
    assert dm.input_shape == (1, 28, 28) and dm.num_classes == 10
    assert len(dm.arrays("test")[1]) == 20  # the official test file, untouched by the split
    assert len(dm.arrays("train")[1]) + len(dm.arrays("val")[1]) == 60
    assert len(dm.class_names) == 10
    quick = _datamodule([f"data={name}", f"data.root={root}", "data.val_fraction=0.4", "data.limit=30"], tmp_path)
    assert len(quick.arrays("train")[1]) + len(quick.arrays("val")[1]) == 30 and len(quick.arrays("test")[1]) == 20


def test_cifar10_from_a_local_root(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.cifar as cifar

    # The generated batches cannot match the real files' checksums.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).exists())
    root = make_cifar10(tmp_path / "data")
    dm = _datamodule(["data=cifar10", f"data.root={root}", "data.val_fraction=0.2"], tmp_path)
    assert dm.input_shape == (3, 32, 32)
    assert len(dm.arrays("train")[1]) == 80 and len(dm.arrays("val")[1]) == 20 and len(dm.arrays("test")[1]) == 20
    assert dm.class_names[0] == "airplane"


def test_a_validation_split_too_small_for_the_classes_is_explained(tmp_path: Path) -> None:
    root = make_mnist(tmp_path / "data", n_train=30)
    with pytest.raises(ValueError, match=r"data.val_fraction=0.1 of 30 images: .*raise val_fraction or data.limit"):
        _datamodule(["data=mnist", f"data.root={root}"], tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_dataset_files_name_the_root_and_the_download_flag(tmp_path: Path, name: str) -> None:
    root = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as info:
        _datamodule([f"data={name}", f"data.root={root}"], tmp_path)
    message = str(info.value)
    assert str(root) in message and "data.download=true" in message


def test_mnist_trains_a_torchvision_model_and_lands_in_mlflow(tmp_path: Path, store) -> None:
    root = make_mnist(tmp_path / "data")
    train_in_process(
        [
            "data=mnist",
            f"data.root={root}",
            "data.val_fraction=0.2",
            "data.batch_size=16",
            "model=mobilenet_v2",
            *SHORT,
            *store_overrides(store),
        ],
        tmp_path / "run",
    )
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED"
    assert 0.0 <= run["metrics.test/f1"] <= 1.0


@pytest.mark.parametrize(
    ("name", "module", "function"),
    [
        ("mnist", "torchvision.datasets.mnist", "download_and_extract_archive"),
        ("cifar10", "torchvision.datasets.cifar", "download_and_extract_archive"),
    ],
)
def test_download_without_a_network_is_one_clear_error(tmp_path: Path, monkeypatch, name: str, module: str, function: str) -> None:
    import importlib
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no route to host")

    monkeypatch.setattr(importlib.import_module(module), function, offline)
    root = tmp_path / "fresh"
    with pytest.raises(ConnectionError) as info:
        _datamodule([f"data={name}", f"data.root={root}", "data.download=true"], tmp_path)
    assert f"data={name}: download into data.root={root} failed" in str(info.value)

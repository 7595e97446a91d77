"""Image data beyond digits: torchvision's MNIST / Fashion-MNIST / CIFAR-10 read
from a local root, and a folder of images per class (``ImageFolder`` layout).

Nothing is downloaded unless ``data.download=true``. Images are held in memory
as arrays (60 000 MNIST images are 188 MB as float32), so the fast
batch-indexed loaders, train-only standardisation and scikit-learn models
work on them exactly as on digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeplab.data.base import ArrayDataModule, Task

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _stratified_holdout(x: np.ndarray, y: np.ndarray, ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    try:
        return tuple(train_test_split(x, y, ids, test_size=fraction, random_state=seed, stratify=y))
    except ValueError as exc:  # too few images to give every class a validation sample
        raise ValueError(f"data.val_fraction={fraction} of {len(y)} images: {exc}; raise val_fraction or data.limit") from None


class TorchvisionImagesDataModule(ArrayDataModule):
    """MNIST, Fashion-MNIST or CIFAR-10 from ``root``: the official test set is
    the test split; ``val_fraction`` of the official training set (stratified)
    is the validation split."""

    task = Task.MULTICLASS
    id_name = "index"  # a sample's position in its official split (train or test)
    # option -> (torchvision class, the folder under root it reads)
    DATASETS = {
        "mnist": ("MNIST", "MNIST/raw"),
        "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
        "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    }

    def __init__(self, name: str, root: str, download: bool = False, limit: int | None = None, **kwargs) -> None:
        kwargs.pop("test_fraction", None)  # the official test set is the test split
        super().__init__(**kwargs)
        if name not in self.DATASETS:
            raise ValueError(f"data.name={name!r}: choose one of {', '.join(self.DATASETS)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 10):
            raise ValueError(f"data.limit={limit!r}: must be null or an integer >= 10")
        self.name, self.root, self.download, self.limit = name, Path(root).expanduser(), download, limit

    def _read(self, train: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
        import torchvision.datasets as datasets

        cls_name, folder = self.DATASETS[self.name]
        try:
            ds = getattr(datasets, cls_name)(str(self.root), train=train, download=self.download)
        except (RuntimeError, OSError) as exc:
            # torchvision says RuntimeError for missing files and for failed MNIST
            # downloads; CIFAR-10 lets the network's URLError (an OSError) through.
            if self.download and (isinstance(exc, OSError) or "download" in str(exc).lower()):
                raise ConnectionError(
                    f"data={self.name}: download into data.root={self.root} failed ({exc}); "
                    "copy the files there and leave data.download=false"
                ) from None
            if "not found" not in str(exc).lower():
                raise
            raise FileNotFoundError(
                f"data={self.name}: no {cls_name} files under data.root={self.root} (torchvision looks in "
                f"{self.root / folder}); copy them there, or add data.download=true on a machine with internet access"
            ) from None
        images = np.asarray(ds.data)
        images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # to (N, C, H, W)
        return images, np.asarray(ds.targets, dtype=np.int64), list(ds.classes)

    def load_splits(self) -> dict[str, tuple[np.ndarray, ...]]:
        x, y, self.class_names = self._read(train=True)
        x_test, y_test, _ = self._read(train=False)
        if self.limit is not None:  # a quick look: the first `limit` images of each official split
            x, y, x_test, y_test = x[: self.limit], y[: self.limit], x_test[: self.limit], y_test[: self.limit]
        x_train, x_val, y_train, y_val, id_train, id_val = _stratified_holdout(x, y, np.arange(len(y)), self.val_fraction, self.seed)
        self.sample_shape = tuple(x.shape[1:])
        return {"train": (x_train, y_train, id_train), "val": (x_val, y_val, id_val), "test": (x_test, y_test, np.arange(len(y_test)))}


class ImageFolderDataModule(ArrayDataModule):
    """``root/<class name>/<image>``: one folder per class, class names sorted.

    Every image is converted to ``channels`` (1 grey, 3 RGB) and resized to
    ``image_size`` x ``image_size`` when loaded; then a stratified
    train/val/test split as for any in-memory data set.
    """

    task = Task.MULTICLASS
    id_name = "path"  # a sample's image file

    def __init__(self, root: str, image_size: int = 32, channels: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"data.channels={channels!r}: choose 1 (grey) or 3 (RGB)")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"data.image_size={image_size!r}: must be a positive integer")
        self.root, self.image_size, self.channels = Path(root).expanduser(), image_size, channels
        self.sample_shape = (channels, image_size, image_size)

    def _files(self) -> tuple[list[Path], np.ndarray]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={self.root}: no such folder (expected one sub-folder of images per class)")
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        files, labels = [], []
        for label, name in enumerate(classes):
            found = sorted(f for f in (self.root / name).rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
            files += found
            labels += [label] * len(found)
        per_class = np.bincount(labels, minlength=len(classes)) if classes else np.array([])
        if len(classes) < 2 or (per_class < 3).any():
            seen = ", ".join(f"{c}: {n}" for c, n in zip(classes, per_class)) or "no class folders"
            raise ValueError(
                f"data.root={self.root}: needs at least 2 class folders with 3 or more images each "
                f"({', '.join(IMAGE_EXTENSIONS)}); found {seen}"
            )
        self.class_names = classes
        self._paths = np.asarray([str(f) for f in files], dtype=object)
        return files, np.asarray(labels, dtype=np.int64)

    def load_ids(self, n: int) -> np.ndarray:
        return self._paths

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        from PIL import Image, UnidentifiedImageError
        from rich.progress import track

        files, labels = self._files()
        mode = "L" if self.channels == 1 else "RGB"
        size = (self.image_size, self.image_size)
        images = np.empty((len(files), self.channels, *size), dtype=np.uint8)
        for i, path in enumerate(track(files, description="loading images", disable=len(files) < 2000)):
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert(mode).resize(size, Image.BILINEAR))
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"data.root: cannot read image {path} ({exc})") from None
            images[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return images, labels

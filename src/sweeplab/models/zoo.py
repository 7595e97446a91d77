"""torchvision architectures (AlexNet, ResNet, VGG, MobileNetV2) adapted to any
image data, with offline transfer learning.

The network is split in three named parts, so parameter groups and freezing
address them by name:

- ``adapter``: maps the data's channels to the 3 the architecture expects
  (grey images are repeated to RGB, which keeps pre-trained first-layer
  filters meaningful; other counts get a learnable 1x1 convolution), and
  resizes small images up to the architecture's minimum size. Resizing was
  chosen over changing the stem (a stride-1 first conv, no max-pool): a
  changed stem no longer matches pre-trained weights.
- ``backbone``: the torchvision model with its last Linear removed.
- ``head``: a new ``Linear(features, num_outputs)``: the head swap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# architecture -> (name of its last Linear in torchvision's layout, smallest input side it takes well)
ARCHITECTURES: dict[str, tuple[str, int]] = {
    "alexnet": ("classifier.6", 64),  # 11x11 stride-4 stem and three 3x3 stride-2 pools
    "resnet18": ("fc", 32),  # overall stride 32
    "resnet50": ("fc", 32),
    "vgg11": ("classifier.6", 32),  # five 2x2 pools
    "mobilenet_v2": ("classifier.1", 32),  # overall stride 32
}


class ChannelAdapter(nn.Module):
    def __init__(self, in_channels: int, size: int | None) -> None:
        super().__init__()
        self.in_channels, self.size = in_channels, size
        self.conv = nn.Conv2d(in_channels, 3, kernel_size=1) if in_channels not in (1, 3) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.in_channels == 1:
            return x.expand(-1, 3, -1, -1)
        return self.conv(x) if self.conv is not None else x


def _parent_of(model: nn.Module, dotted: str) -> tuple[nn.Module, str]:
    parent_name, _, child = dotted.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def resolve_weights(arch: str, weights: str, download: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a file path, or from a torchvision weight name
    (``ResNet18_Weights.IMAGENET1K_V1``, ``IMAGENET1K_V1``, ``DEFAULT``) found in
    the local torch hub cache. Downloads only with ``download=True``."""
    from torchvision.models import get_model_weights

    weights = str(weights)
    looks_like_path = weights.endswith((".pth", ".pt", ".ckpt", ".bin")) or "/" in weights or Path(weights).exists()
    if looks_like_path:
        return _read_state_dict(Path(weights).expanduser())

    enum = get_model_weights(arch)
    member = weights.split(".", 1)[1] if weights.startswith(enum.__name__ + ".") else weights
    try:
        chosen = enum[member]
    except KeyError:
        raise ValueError(
            f"model.weights={weights!r}: not a file and not a weight name of {arch}; "
            f"names: {', '.join(['DEFAULT', *enum.__members__])}, or a path to a .pth state dict"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(chosen.url).name
    if cached.exists():
        return _read_state_dict(cached)
    if not download:
        raise FileNotFoundError(
            f"model.weights={weights}: not on disk; looked for {cached} (the torch hub cache, $TORCH_HOME). "
            f"Copy {Path(chosen.url).name} there from a machine with internet, pass a .pth path, "
            "or add model.download_weights=true"
        )
    try:
        return chosen.get_state_dict(progress=True, check_hash=True)
    except OSError as exc:
        raise ConnectionError(f"model.weights={weights}: download of {chosen.url} failed ({exc})") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, or the network part of a sweeplab/Lightning checkpoint."""
    import pickle

    if not path.is_file():
        raise FileNotFoundError(f"model.weights={path}: no such file")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"model.weights={path}: refused: not a plain tensor state dict (it needs unpickling code)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many formats' errors
        raise ValueError(f"model.weights={path}: not a file torch can read ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a Lightning checkpoint
        state = {k[len("net.") :]: v for k, v in state["state_dict"].items() if k.startswith("net.")}
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.weights={path}: not a state dict (a mapping of parameter names to tensors)")
    return state


class TorchvisionNet(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        arch: str = "resnet18",
        weights: str | None = None,
        download_weights: bool = False,
        freeze_backbone: bool = False,
        reset_head: bool = False,
        resize_to: int | str | None = "auto",
    ) -> None:
        super().__init__()
        from torchvision.models import get_model

        if arch not in ARCHITECTURES:
            raise ValueError(f"model.arch={arch!r}: choose one of {', '.join(ARCHITECTURES)}")
        if len(input_shape) != 3:
            raise ValueError(
                f"model={arch} needs image-shaped samples (channels, height, width); the data gives "
                f"{tuple(input_shape)}. Use image data such as data=digits, mnist, cifar10 or image_folder"
            )
        head_name, min_side = ARCHITECTURES[arch]
        channels, height, width = (int(d) for d in input_shape)
        if resize_to == "auto":
            size = min_side if min(height, width) < min_side else None
        elif resize_to is None or (isinstance(resize_to, int) and not isinstance(resize_to, bool) and resize_to >= min_side):
            size = resize_to
        else:
            raise ValueError(f"model.resize_to={resize_to!r}: auto, null (never) or a side length >= {min_side} for {arch}")
        if size is None and min(height, width) < min_side:
            raise ValueError(
                f"model.resize_to=null: {height}x{width} images are smaller than {arch} takes ({min_side} px a side); "
                "use model.resize_to=auto or a side length"
            )

        self.arch, self.freeze_backbone, self.reset_head = arch, bool(freeze_backbone), bool(reset_head)
        self.adapter = ChannelAdapter(channels, size)
        backbone = get_model(arch, weights=None)
        parent, child = _parent_of(backbone, head_name)
        last: nn.Linear = getattr(parent, child)
        self.head = nn.Linear(last.in_features, num_outputs)
        setattr(parent, child, nn.Identity())
        self.backbone = backbone
        self.loaded_from: str | None = None
        if weights:
            state = resolve_weights(arch, weights, download=download_weights)
            self.load_pretrained(state, str(weights))
        if self.freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            # Eval from the start, not only when train() is called: Lightning
            # restores each submodule's own mode flag after validation.
            self.backbone.eval()

    def load_pretrained(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load a state dict in torchvision's layout (``fc.weight``...) or this
        module's (``backbone.``/``head.``/``adapter.``). The backbone must match
        exactly; the head is loaded only if its shape fits the data and
        ``reset_head`` is off, else it stays new (the head swap)."""
        head_name = ARCHITECTURES[self.arch][0]
        if not any(k.startswith("backbone.") for k in state):
            state = {("head." + k[len(head_name) + 1 :] if k.startswith(head_name + ".") else "backbone." + k): v for k, v in state.items()}
        part = lambda prefix: {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
        try:
            self.backbone.load_state_dict(part("backbone."), strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise ValueError(f"model.weights={source} does not fit {self.arch}: {detail[:400]}") from None
        head = part("head.")
        if head and not self.reset_head and all(head[k].shape == v.shape for k, v in self.head.state_dict().items() if k in head):
            self.head.load_state_dict(head)
            print(f"model.weights: {self.arch} backbone and head loaded from {source}")
        else:
            found = head["weight"].shape[0] if "weight" in head else "no"
            print(
                f"model.weights: {self.arch} backbone loaded from {source}; new head "
                f"({found} outputs in the file, {self.head.out_features} for this data)"
            )
        adapter = part("adapter.")
        if adapter and all(k in self.adapter.state_dict() and adapter[k].shape == self.adapter.state_dict()[k].shape for k in adapter):
            self.adapter.load_state_dict(adapter)
        self.loaded_from = source

    def train(self, mode: bool = True) -> TorchvisionNet:
        super().train(mode)
        if self.freeze_backbone:
            # A frozen backbone is a fixed feature extractor: BatchNorm keeps its
            # pre-trained statistics and dropout stays off.
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.adapter(x)))

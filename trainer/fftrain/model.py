"""FastFlow = frozen backbone + per-scale LayerNorm + 2D flow + the anomaly head."""

from __future__ import annotations

import os

import torch
from torch import nn

from .backbones import BACKBONES, build_feature_extractor
from .config import FastFlowConfig
from .flow import Flow2d
from .head import AnomalyHead


class FastFlow(nn.Module):
    """Input: float RGB images in [0, 1], [N, 3, S, S]. Output: (anomaly_map [N,1,S,S], score [N]).

    ``load_pretrained=False`` builds the architecture only, for loading a checkpoint (which
    carries the backbone weights too, so exporting needs no weights file).
    """

    def __init__(self, config: FastFlowConfig, backbone_weights: str | os.PathLike | None = None, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        spec = BACKBONES[config.backbone]
        random = config.random_backbone or not load_pretrained
        self.backbone, self.backbone_sha256 = build_feature_extractor(config.backbone, backbone_weights, random=random)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        size = config.image_size
        self.feature_shapes = [(c, size // s, size // s) for c, s in zip(self.backbone.channels, self.backbone.strides)]
        # A LayerNorm over [C, h, w] fixes the input size: it is recorded in the metadata
        # and the runtime resizes every image to it.
        self.norms = nn.ModuleList(nn.LayerNorm(list(shape)) for shape in self.feature_shapes)
        self.flows = nn.ModuleList(
            Flow2d(c, config.flow_steps, config.hidden_ratio, config.conv3x3_only, config.clamp, seed=config.seed + i)
            for i, (c, _, _) in enumerate(self.feature_shapes)
        )
        self.head = AnomalyHead((size, size), config.score_reduction, config.topk_fraction)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.backbone.strides)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics must never move
        return self

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features of float RGB [0, 1] images (the expensive, frozen part)."""
        return self.backbone((images - self.mean) / self.std)

    def flow(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        zs, logdets = [], []
        for norm, flow, f in zip(self.norms, self.flows, features):
            z, logdet = flow(norm(f))
            zs.append(z)
            logdets.append(logdet)
        return zs, logdets

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zs, _ = self.flow(self.extract(images))
        return self.head(zs)

    def dims(self) -> int:
        return sum(c * h * w for c, h, w in self.feature_shapes)

    def nll_per_dim(self, zs: list[torch.Tensor], logdets: list[torch.Tensor]) -> torch.Tensor:
        """Negative log-likelihood per image [N], divided by the number of feature values
        (the Gaussian constant dropped): the training loss and the validation measure."""
        total = sum(0.5 * (z * z).flatten(1).sum(1) - ld.flatten(1).sum(1) for z, ld in zip(zs, logdets))
        return total / self.dims()

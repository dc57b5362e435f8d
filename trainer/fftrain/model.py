"""The model = frozen backbone + per-scale LayerNorm + per-scale density decoders + the anomaly head.

The decoders are those of the configured kind (fftrain.kinds: FastFlow's 2D flows or
CFLOW-AD's conditional flows); everything else is the same for every kind.

Each stage computes in the dtype of its own weights and casts its input to it: the casts
are no-ops in FP32 (training, the FP32 export), and they are the precision boundaries when
ffexport turns the backbone (and the decoders) to FP16 before tracing (ffexport/precision.py).
The head always computes in FP32 (head.py says why).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .backbones import BACKBONES, build_feature_extractor
from .config import ModelConfig
from .head import AnomalyHead, ScaleLatent
from .kinds import KINDS
from .memory_bank import BANK_STRIDE, MemoryBankScore


#: ITU-R BT.601 luma, as OpenCV's BGR2GRAY and the JPEG/MJPEG YCbCr transform compute it.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _norm_dtype(norm: nn.LayerNorm, fallback: torch.dtype) -> torch.dtype:
    # A norm without affine parameters has no dtype of its own: it computes in the dtype of the
    # stage it belongs to (the decoders).
    return norm.weight.dtype if norm.weight is not None else fallback


class AnomalyModel(nn.Module):
    """Input: float RGB images in [0, 1], [N, 3, H, W]. Output: (anomaly_map [N,1,H,W], score [N]).

    ``load_pretrained=False`` builds the architecture only, for loading a checkpoint (which
    carries the backbone weights too, so exporting needs no weights file).
    """

    def __init__(self, config: ModelConfig, backbone_weights: str | os.PathLike | None = None, load_pretrained: bool = True):
        super().__init__()
        self.config = config
        self.kind = KINDS[config.model]
        spec = BACKBONES[config.backbone]
        random = config.random_backbone or not load_pretrained
        self.backbone, self.backbone_sha256 = build_feature_extractor(config.backbone, backbone_weights, random=random)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        height, width = config.image_size
        self.feature_shapes = [(c, height // s, width // s) for c, s in zip(self.backbone.channels, self.backbone.strides)]
        hidden = config.flow_hidden_channels or tuple(self.kind.hidden_channels(config, c) for c in self.backbone.channels)
        if len(hidden) != len(self.feature_shapes):
            raise ValueError(
                f"flow_hidden_channels has {len(hidden)} entries for {len(self.feature_shapes)} feature scales"
            )
        # The checkpoint records the layer sizes, not only the ratio that produced them.
        self.config = config = config.model_copy(update={"flow_hidden_channels": tuple(hidden)})
        # A LayerNorm over [C, h, w] fixes the input size: it is recorded in the metadata
        # and the runtime resizes every image to it.
        self.norms = nn.ModuleList(
            nn.LayerNorm(list(shape), elementwise_affine=self.kind.trainable_norms) for shape in self.feature_shapes
        )
        self.flows = nn.ModuleList(
            self.kind.decoder(config, c, (h, w), hid, config.seed + i)
            for i, ((c, h, w), hid) in enumerate(zip(self.feature_shapes, hidden))
        )
        self.head = AnomalyHead(
            (height, width), config.score_reduction, config.topk_fraction,
            map_shapes=[(h, w) for _, h, w in self.feature_shapes], normalization=config.map_normalization,
            blur_sigma=config.map_blur_sigma,
            score_scales=[self.backbone.strides.index(s) for s in config.score_strides],
        )
        # Built empty at the recorded size so a checkpoint's bank loads into it; training fits it.
        bank_scale = self.strides.index(BANK_STRIDE)
        self.register_module("bank", MemoryBankScore(
            self.feature_shapes[bank_scale][0], config.memory_bank_vectors, bank_scale, self.feature_shapes[bank_scale][1:],
            map_size=(height, width) if config.memory_bank_map_weight > 0 else None) if config.memory_bank_vectors else None)

    @property
    def strides(self) -> tuple[int, ...]:
        return tuple(self.backbone.strides)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics must never move
        return self

    def extract(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features of float RGB [0, 1] images (the expensive, frozen part)."""
        return self.backbone(self.normalize_input(images).to(_dtype(self.backbone)))

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the backbone reads: (x - mean) / std per channel; for a luma model x is the
        luminance on all three channels, computed as one 1x1 convolution (3 -> 3 channels,
        weight luma_k / std_c, bias -mean_c / std_c), which keeps the tensor three channels wide
        from the start: CPU runtimes then lay it out like an RGB input instead of broadcasting
        one channel in a padded layout."""
        if self.config.input_color != "luma":
            return (images - self.mean) / self.std
        std, mean = self.std.view(3, 1), self.mean.view(3)
        weight = (torch.tensor(LUMA_WEIGHTS, device=images.device).view(1, 3) / std).view(3, 3, 1, 1)
        return nn.functional.conv2d(images, weight, -mean / std.view(3))

    def normalize(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each scale's features through the local mean (``feature_pooling``) and its LayerNorm, in
        the norms' dtype: what the decoders read."""
        dtype = _dtype(self.flows)
        return [norm(self.pool(f.to(_norm_dtype(norm, dtype)))) for norm, f in zip(self.norms, features)]

    def pool(self, feature: torch.Tensor) -> torch.Tensor:
        """The mean of each cell's k x k neighbourhood (k = ``feature_pooling``; the border
        averages only the cells that exist, as PatchCore's aggregation does)."""
        k = self.config.feature_pooling
        if k == 1:
            return feature
        return nn.functional.avg_pool2d(feature, k, stride=1, padding=k // 2, count_include_pad=False)

    def flow(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per scale z [N, C, h, w] and log|det J| [N, h, w] of the trained decoders."""
        zs, logdets = [], []
        for decoder, f in zip(self.flows, self.normalize(features)):
            z, logdet = decoder(f)
            zs.append(z)
            logdets.append(logdet)
        return zs, logdets

    def head_inputs(self, zs: list[torch.Tensor], logdets: list[torch.Tensor]) -> list:
        """What the head reads of each scale's decoder output: z, or z with its log-determinant
        when the kind's map counts it."""
        if not self.kind.map_counts_logdet:
            return list(zs)
        return [ScaleLatent(z, logdet) for z, logdet in zip(zs, logdets)]

    def with_bank(self, anomaly_map: torch.Tensor, score: torch.Tensor,
                  features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The anomaly map and the image score, plus the memory bank's weighted distances where
        the model has one (the map only where training put them there)."""
        if self.bank is None:
            return anomaly_map, score
        map_term, score_term = self.bank(features, self.head.image_size)
        return anomaly_map if map_term is None else anomaly_map + map_term, score + score_term

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extract(images)
        return self.with_bank(*self.head(self.head_inputs(*self.flow(features))), features)

    def dims(self) -> int:
        return sum(c * h * w for c, h, w in self.feature_shapes)

    def nll_per_dim(self, zs: list[torch.Tensor], logdets: list[torch.Tensor]) -> torch.Tensor:
        """Negative log-likelihood per image [N], divided by the number of feature values
        (the Gaussian constant dropped): the validation measure, and FastFlow's training loss."""
        total = sum(0.5 * (z * z).flatten(1).sum(1) - ld.flatten(1).sum(1) for z, ld in zip(zs, logdets))
        return total / self.dims()

    def training_nll(self, features: list[torch.Tensor], generator: torch.Generator, positions: int) -> torch.Tensor:
        """One optimizer step's loss on the backbone features of a batch of training maps, as the
        kind trains (``positions``: feature vectors per scale where it samples them)."""
        return self.kind.training_nll(self, features, generator, positions)

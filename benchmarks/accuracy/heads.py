"""The flows' scoring choices that need no retraining, re-applied to one trained model.

FastFlow's decoders are independent per scale, so each scale's plain map (0.5 * mean_c z^2)
is computed once, and every variant here only changes what happens after it: which scales
are fused, how each is standardized by the training normals (none, per scale, per
position: fftrain.head) and how the image score is taken (mean of the top 1% of map pixels,
or the largest pixel). The real head (fftrain.head.AnomalyHead) does the work, so the
variant that matches the shipped configuration computes what the shipped graph computes,
apart from one difference: it is standardized on the training images without the
re-exposed views the trainer adds (those are not cached by a finished checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fftrain.head import AnomalyHead


@dataclass(frozen=True)
class HeadVariant:
    name: str
    scales: tuple[int, ...]  # indices into the backbone's scales (0: stride 4, 1: stride 8, 2: stride 16)
    normalization: str = "position"
    reduction: str = "topk_mean"


VARIANTS = (
    HeadVariant("refit head (as shipped)", (0, 1, 2)),
    HeadVariant("no standardization", (0, 1, 2), normalization="none"),
    HeadVariant("standardized per scale", (0, 1, 2), normalization="scale"),
    HeadVariant("score = largest pixel", (0, 1, 2), reduction="max"),
    HeadVariant("strides 8+16 only", (1, 2)),
    HeadVariant("stride 16 only", (2,)),
    HeadVariant("strides 4+8 only", (0, 1)),
)


def fitted_head(model, variant: HeadVariant, train_raw: list[torch.Tensor]) -> AnomalyHead:
    shapes = [tuple(train_raw[i].shape[-2:]) for i in variant.scales]
    head = AnomalyHead(model.config.image_size, variant.reduction, model.config.topk_fraction, map_shapes=shapes,
                       normalization=variant.normalization, blur_sigma=model.config.map_blur_sigma)
    head.fit_normalization([train_raw[i] for i in variant.scales])
    return head


@torch.no_grad()
def scores_and_maps(head: AnomalyHead, variant: HeadVariant, raw: list[torch.Tensor], batch: int = 32):
    """(scores [N] float64, maps [N, H, W] float32) of per-scale plain maps."""
    scores, maps = [], []
    for start in range(0, len(raw[0]), batch):
        chosen = [raw[i][start : start + batch] for i in variant.scales]
        if variant.normalization != "none":
            chosen = [(m - getattr(head, f"loc{k}")) * getattr(head, f"inv_scale{k}") for k, m in enumerate(chosen)]
        fused = head.fuse(chosen)
        scores.append(head.score(fused).double())
        maps.append(fused[:, 0])
    return torch.cat(scores).numpy(), torch.cat(maps).numpy().astype(np.float32)

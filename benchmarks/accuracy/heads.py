"""The flows' scoring choices that need no retraining, re-applied to one trained model.

FastFlow's decoders are independent per scale, so each scale's plain map (0.5 * mean_c z^2)
is computed once, and every variant here only changes what happens after it: which scales
are fused (for the map, and for the image score: ``score_scales``), how each is standardized by the training normals (none, per scale, per
position: fftrain.head) and how the image score is taken (mean of the top 1% of map pixels,
or the largest pixel). The real head (fftrain.head.AnomalyHead) does the work, so the
variant that matches the shipped configuration computes what the shipped graph computes,
apart from one difference: it is standardized on the training images without the
re-exposed views the trainer adds (those are not cached by a finished checkpoint).

Three image scores are taken from the shipped map after it (``post``): the mean of the top 5%
(a larger area than the shipped 1%), the largest pixel of the map blurred at sigma 8 px (an
area-weighted peak), and the largest connected region's excess mass (issue 21's "score from
connected regions": sum of map - t over each 8-connected region above t, t the 99.5th
percentile of the training normals' map pixels; an image without a region scores its
largest pixel - t, below every region's mass). Their parameters were set before any run.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fftrain.head import AnomalyHead


@dataclass(frozen=True)
class HeadVariant:
    name: str
    scales: tuple[int, ...]  # indices into the backbone's scales (0: stride 4, 1: stride 8, 2: stride 16)
    normalization: str = "position"
    reduction: str = "topk_mean"
    post: str | None = None  # an image score taken from the fused map instead of the head's (module docstring)
    # The image score from the map fused of these of ``scales`` only (the map still fuses all of
    # them); None: from the map. SHIPPED: as the checkpoint's config says.
    score_scales: tuple[int, ...] | str | None = None


SHIPPED = "as the checkpoint"


VARIANTS = (
    HeadVariant("refit head (as shipped)", (0, 1, 2), score_scales=SHIPPED),
    HeadVariant("refit head, score from every stride", (0, 1, 2)),
    HeadVariant("score from strides 8+16, map from all three", (0, 1, 2), score_scales=(1, 2)),
    HeadVariant("no standardization", (0, 1, 2), normalization="none"),
    HeadVariant("standardized per scale", (0, 1, 2), normalization="scale"),
    HeadVariant("score = largest pixel", (0, 1, 2), reduction="max"),
    HeadVariant("strides 8+16 only", (1, 2)),
    HeadVariant("stride 16 only", (2,)),
    HeadVariant("strides 4+8 only", (0, 1)),
    HeadVariant("score = top 5% mean", (0, 1, 2), post="top5"),
    HeadVariant("score = largest pixel, map blurred 8 px", (0, 1, 2), post="blurred_max"),
    HeadVariant("score = largest region's excess mass", (0, 1, 2), post="region_mass"),
)
REGION_QUANTILE = 0.995
BLUR_SIGMA_PX = 8.0
TOP_FRACTION = 0.05


def fitted_head(model, variant: HeadVariant, train_raw: list[torch.Tensor]) -> AnomalyHead:
    shapes = [tuple(train_raw[i].shape[-2:]) for i in variant.scales]
    score_scales = model.head.score_scales if variant.score_scales == SHIPPED else variant.score_scales
    head = AnomalyHead(model.config.image_size, variant.reduction, model.config.topk_fraction, map_shapes=shapes,
                       normalization=variant.normalization, blur_sigma=model.config.map_blur_sigma,
                       score_scales=score_scales)
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
        scores.append(head.score(head.fuse_for_score(chosen)).double())
        maps.append(fused[:, 0])
    return torch.cat(scores).numpy(), torch.cat(maps).numpy().astype(np.float32)


def region_level(train_maps: np.ndarray) -> float:
    """t of the region score: the REGION_QUANTILE of the training normals' map pixels."""
    return float(np.quantile(train_maps, REGION_QUANTILE))


def post_scores(maps: np.ndarray, post: str, level: float) -> np.ndarray:
    """Image scores [N] float64 of fused maps [N, H, W] by the ``post`` rule (module docstring)."""
    out = np.empty(len(maps), np.float64)
    for i, m in enumerate(maps):
        if post == "top5":
            flat = m.ravel()
            k = max(1, int(np.ceil(TOP_FRACTION * flat.size)))
            out[i] = float(np.partition(flat, flat.size - k)[flat.size - k:].mean())
        elif post == "blurred_max":
            out[i] = float(cv2.GaussianBlur(m, (0, 0), BLUR_SIGMA_PX).max())
        elif post == "region_mass":
            above = (m > level).astype(np.uint8)
            n, labels = cv2.connectedComponents(above, connectivity=8)
            if n <= 1:
                out[i] = float(m.max()) - level
            else:
                out[i] = float(np.bincount(labels.ravel(), weights=np.maximum(m - level, 0).ravel())[1:].max())
        else:
            raise ValueError(f"unknown post score {post!r}")
    return out

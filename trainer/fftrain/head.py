"""THE anomaly head: the one place where flow outputs become an anomaly map and a score.

Training-time evaluation and the exported ONNX graph both run this module, so what is
validated is what ships.

The head does not know which density model (fftrain.kinds) produced its input: per scale it
reads a latent z [N, C, h, w] (or z's channel groups) and, when the model's map counts it, the
per-position log|det J| of the map from features to z (:class:`ScaleLatent`). The map is the
negative log-likelihood per position, averaged over channels: 0.5 * mean_c z^2 (FastFlow's
map, the Jacobian left out as in its paper), or (0.5 * sum_c z^2 - log|det J|) / C (the full
likelihood, CFLOW-AD's); the Gaussian constant is dropped. Averaging rather than summing keeps
scales with 24 and 112 channels on the same footing, so the scale fusion is a plain mean.

Optionally (``map_normalization``) each scale's map is first standardized by what normal
parts show there, fitted on the training normals after training:
- ``scale``: one mean and std per scale. The flows never fit every scale equally well,
  and the worst-fitted scale would otherwise dominate the fused map.
- ``position``: a mean and std per position of each scale's map. Aligned parts have
  places (edges, busbars, fixture marks) where even good parts are less likely under the
  flow; a defect is what departs from what normal parts show *at that place*.
Maps are upsampled bilinearly to the input size and fused by a mean, optionally smoothed
by a Gaussian (``blur_sigma`` pixels at the input size: a defect is a region, and single
pixels of flow noise should not outvote it). All three steps are linear, so the head
computes them as two products with constant matrices (resize.py), not as one full-size
resize per scale. The image score is
the mean of the top-k pixels (or the max): the top-k mean is less sensitive to a single
noisy pixel than the max. It may be taken from a map fused from some of the scales only
(``score_scales``), fused the same way: the shipped FastFlow scores from strides 8 and 16 and
returns the map of all three (benchmarks/README.md, "Levers, one at a time": the stride-4
map localizes small defects, and its texture noise blurs which images hold one).

TensorRT builds TopK only for K < 3840 (ffcore.trtlimits), and the top 1% of a 624x624 map is
already K = 3894. So for a larger K
the score takes the top values in rounds of at most TOPK_MAX_K (:func:`topk_sum`): each round's
TopK picks the largest values still in the map and ScatterElements masks exactly those
positions with -inf before the next round. The values summed are the same multiset
``torch.topk(map, K)`` returns (ties included, negative standardized maps included); only
the order of the float additions differs. For K <= TOPK_MAX_K the graph is the single TopK it
always was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ffcore.trtlimits import TOPK_MAX_K

from .resize import fusion_matrices

Z_MAP = "0.5 * mean over channels of z^2"
NLL_MAP = "(0.5 * sum over channels of z^2 - log|det J|) / channels"
MAP_UNITS = "{map} (per-position negative log-likelihood per channel), averaged over feature scales"
MAP_UNITS_NORMALIZED = (
    "per feature scale, {map} standardized by its mean and std on normal training "
    "images ({how}), averaged over feature scales"
)
MapNormalization = Literal["none", "scale", "position"]


@dataclass(frozen=True)
class ScaleLatent:
    """One scale of a density decoder's output whose map is the full negative log-likelihood:
    z (one tensor [N, C, h, w], or channel groups whose channels together are z's) and the
    per-position log|det J| [N, h, w] of the map from the features to z. A decoder whose map is
    0.5 * mean_c z^2 alone hands the head z itself."""

    z: torch.Tensor | tuple[torch.Tensor, ...]
    logdet: torch.Tensor


def topk_sum(flat: torch.Tensor, k: int, max_k: int = TOPK_MAX_K) -> torch.Tensor:
    """Sum of the ``k`` largest values of each row of ``flat`` [N, M], exactly, with no
    TopK wider than ``max_k``: rounds of TopK, each round's picks masked with -inf
    (ScatterElements) before the next. Same values as ``torch.topk(flat, k).values.sum(1)``."""
    total = None
    rest = flat
    remaining = int(k)
    while remaining > 0:
        step = min(remaining, int(max_k))
        values, index = torch.topk(rest, step, dim=1)
        part = values.sum(dim=1)
        total = part if total is None else total + part
        remaining -= step
        if remaining:
            rest = rest.scatter(1, index, float("-inf"))
    return total


def _to_float(z):
    if isinstance(z, ScaleLatent):
        return ScaleLatent(_to_float(z.z), z.logdet.float())
    return z.float() if isinstance(z, torch.Tensor) else tuple(part.float() for part in z)


def map_units(normalization: str, full_likelihood: bool = False) -> str:
    """What one map value means: ``full_likelihood`` when the decoders hand the head
    :class:`ScaleLatent` (the log-determinant counted), else 0.5 * mean_c z^2."""
    formula = NLL_MAP if full_likelihood else Z_MAP
    if normalization == "none":
        return MAP_UNITS.format(map=formula)
    return MAP_UNITS_NORMALIZED.format(map=formula, how="per scale" if normalization == "scale" else "per position")


class AnomalyHead(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int],
        reduction: Literal["max", "topk_mean"],
        topk_fraction: float,
        map_shapes: Sequence[tuple[int, int]] = (),
        normalization: MapNormalization = "none",
        blur_sigma: float = 0.0,
        score_scales: Sequence[int] | None = None,
    ):
        super().__init__()
        self.n_scales = n_scales = len(map_shapes)
        if score_scales is not None:
            score_scales = tuple(sorted(set(int(i) for i in score_scales)))
            if not score_scales or (n_scales and not all(0 <= i < n_scales for i in score_scales)):
                raise ValueError(f"score_scales {score_scales}: indices into the {n_scales} map scales, at least one")
            if n_scales and score_scales == tuple(range(n_scales)):
                score_scales = None  # every scale: the score is taken from the anomaly map itself
        #: None: the image score is taken from the anomaly map; else from the map fused from these scales.
        self.score_scales = score_scales
        self.image_size = tuple(image_size)
        self.blur_sigma = float(blur_sigma)
        if self.blur_sigma > 0:
            radius = max(1, math.ceil(3 * self.blur_sigma))
            x = torch.arange(-radius, radius + 1, dtype=torch.float64)
            kernel = torch.exp(-0.5 * (x / self.blur_sigma) ** 2)
            self.register_buffer("blur_kernel", (kernel / kernel.sum()).float().view(1, 1, 1, -1))
        self.reduction = reduction
        self.normalization = normalization
        # k is a constant of the graph (TopK with a fixed k exports and compiles cleanly).
        self.topk = max(1, math.ceil(topk_fraction * self.image_size[0] * self.image_size[1]))
        if normalization != "none":
            # Identity until fitted: an unfitted head computes the plain map.
            for i, (h, w) in enumerate(map_shapes):
                self.register_buffer(f"loc{i}", torch.zeros(1, 1, h, w))
                self.register_buffer(f"inv_scale{i}", torch.ones(1, 1, h, w))
        if map_shapes:
            # Derived from the configuration, not state: checkpoints stay as they were.
            left, rights = fusion_matrices(self.image_size, map_shapes, self.blur_sigma)
            self.register_buffer("left", left, persistent=False)
            for i, right in enumerate(rights):
                self.register_buffer(f"right{i}", right, persistent=False)
            if self.score_scales is not None:
                # Each scale's right matrix depends on that scale alone; the left one averages the chosen.
                score_left, _ = fusion_matrices(self.image_size, [map_shapes[i] for i in self.score_scales],
                                                self.blur_sigma)
                self.register_buffer("score_left", score_left, persistent=False)

    @staticmethod
    def scale_map(z: torch.Tensor | tuple[torch.Tensor, ...] | ScaleLatent) -> torch.Tensor:
        """[N, C, h, w] -> [N, 1, h, w] per-position NLL per channel. ``z`` may also come as
        channel groups (the shipped flow's halves, fused_flow.py): the mean is over all of them;
        or as a :class:`ScaleLatent`: its log-determinant per channel is subtracted."""
        if isinstance(z, ScaleLatent):
            channels = z.z.shape[1] if isinstance(z.z, torch.Tensor) else sum(part.shape[1] for part in z.z)
            return AnomalyHead.scale_map(z.z) - z.logdet.unsqueeze(1) * (1.0 / channels)
        if isinstance(z, torch.Tensor):
            return 0.5 * torch.mean(z * z, dim=1, keepdim=True)
        channels = sum(part.shape[1] for part in z)
        total = sum((part * part).sum(dim=1, keepdim=True) for part in z)
        return total * (0.5 / channels)

    def scale_maps(self, zs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-scale maps at feature resolution, standardized when the head is."""
        # FP32 whatever precision the flows ran in (a no-op for FP32 z): 0.5 * mean_c z^2 of a
        # defect exceeds FP16's 65504 once |z| > 256, and a saturated map scores every defect inf.
        maps = [self.scale_map(_to_float(z)) for z in zs]
        if self.normalization == "none":
            return maps
        return [(m - getattr(self, f"loc{i}")) * getattr(self, f"inv_scale{i}") for i, m in enumerate(maps)]

    def forward(self, zs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.scale_maps(zs)
        anomaly_map = self.fuse(maps)
        if self.score_scales is None:
            return anomaly_map, self.score(anomaly_map)
        return anomaly_map, self.score(self.fuse_for_score(maps))

    def fuse_for_score(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The map the image score is taken from: :meth:`fuse` of the ``score_scales`` only."""
        if self.score_scales is None:
            return self.fuse(maps)
        if not self.n_scales or len(maps) != self.n_scales:
            return self.fuse_reference([maps[i] for i in self.score_scales])
        rows = torch.cat([maps[i] @ getattr(self, f"right{i}") for i in self.score_scales], dim=2)
        return self.score_left @ rows

    def fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Upsample each scale's map bilinearly to the input size, average, blur: all of it
        linear and separable, so it is ``sum_s L_s @ M_s @ R_s^T`` with constant matrices
        (resize.py), evaluated as two matrix products instead of one full-size resize per
        scale. Same values as ``interpolate`` + mean + :meth:`blur` up to float rounding."""
        if not self.n_scales or len(maps) != self.n_scales:
            return self.fuse_reference(maps)
        rows = torch.cat([m @ getattr(self, f"right{i}") for i, m in enumerate(maps)], dim=2)
        return self.left @ rows

    def fuse_reference(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The fusion written out step by step (what :meth:`fuse` must equal)."""
        maps = [F.interpolate(m, size=self.image_size, mode="bilinear", align_corners=False) for m in maps]
        anomaly_map = torch.stack(maps, dim=0).mean(dim=0)
        if self.blur_sigma > 0:
            anomaly_map = self.blur(anomaly_map)
        return anomaly_map

    def blur(self, amap: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian; edges replicated so the border is not pulled towards 0."""
        k = self.blur_kernel
        r = k.shape[-1] // 2
        amap = F.conv2d(F.pad(amap, (r, r, 0, 0), mode="replicate"), k)
        return F.conv2d(F.pad(amap, (0, 0, r, r), mode="replicate"), k.transpose(2, 3))

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        flat = anomaly_map.flatten(1)
        if self.reduction == "max":
            return flat.amax(dim=1)
        if self.topk <= TOPK_MAX_K:
            return torch.topk(flat, self.topk, dim=1).values.mean(dim=1)
        return topk_sum(flat, self.topk) / self.topk

    @torch.no_grad()
    def fit_normalization(self, raw_maps: Sequence[torch.Tensor], min_std_fraction: float = 0.25) -> None:
        """Fit the standardization from plain per-scale maps of normal images
        (``raw_maps[i]``: [N, 1, h, w]). A per-position std is floored at
        ``min_std_fraction`` of that scale's mean std, so a place where the few training
        images happened to agree cannot turn small differences into alarms."""
        if self.normalization == "none":
            return
        for i, m in enumerate(raw_maps):
            m = m.double()
            if self.normalization == "scale":
                loc = m.mean().expand_as(m[0:1])
                std = m.std().expand_as(m[0:1])
            else:
                loc = m.mean(dim=0, keepdim=True)
                std = m.std(dim=0, keepdim=True)
                std = torch.clamp(std, min=min_std_fraction * float(std.mean()))
            std = torch.clamp(std, min=1e-6)
            getattr(self, f"loc{i}").copy_(loc.float())
            getattr(self, f"inv_scale{i}").copy_((1.0 / std).float())

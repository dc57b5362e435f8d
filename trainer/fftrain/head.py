"""THE anomaly head: the one place where flow outputs become an anomaly map and a score.

Training-time evaluation and the exported ONNX graph both run this module, so what is
validated is what ships.

Per scale, the map is the negative log-likelihood of z under N(0, I) per position,
averaged over channels (0.5 * mean_c z^2; the constant is dropped). Averaging rather
than summing keeps scales with 24 and 112 channels on the same footing (about 0.5 on
normal features), so the scale fusion is a plain mean. Maps are upsampled bilinearly to
the input size, fused, and the image score is the mean of the top-k pixels (or the max):
the top-k mean is less sensitive to a single noisy pixel than the max.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MAP_UNITS = "0.5 * mean over channels of z^2 (per-position negative log-likelihood per channel), averaged over feature scales"


class AnomalyHead(nn.Module):
    def __init__(self, image_size: tuple[int, int], reduction: Literal["max", "topk_mean"], topk_fraction: float):
        super().__init__()
        self.image_size = tuple(image_size)
        self.reduction = reduction
        # k is a constant of the graph (TopK with a fixed k exports and compiles cleanly).
        self.topk = max(1, math.ceil(topk_fraction * self.image_size[0] * self.image_size[1]))

    @staticmethod
    def scale_map(z: torch.Tensor) -> torch.Tensor:
        """[N, C, h, w] -> [N, 1, h, w] per-position NLL per channel."""
        return 0.5 * torch.mean(z * z, dim=1, keepdim=True)

    def forward(self, zs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        maps = [
            F.interpolate(self.scale_map(z), size=self.image_size, mode="bilinear", align_corners=False) for z in zs
        ]
        anomaly_map = torch.stack(maps, dim=0).mean(dim=0)
        return anomaly_map, self.score(anomaly_map)

    def score(self, anomaly_map: torch.Tensor) -> torch.Tensor:
        flat = anomaly_map.flatten(1)
        if self.reduction == "max":
            return flat.amax(dim=1)
        return torch.topk(flat, self.topk, dim=1).values.mean(dim=1)

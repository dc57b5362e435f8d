"""The suite's reference scorer (never shipped): nearest-neighbour distance to a memory bank
of the SAME backbone's features, PatchCore's recipe (Roth et al. 2022) on the flows' inputs.

* patch features: each scale's map at strides 8 and 16 averaged over its 3x3 neighbourhood
  (local aggregation), the stride-16 map upsampled bilinearly to stride 8, both concatenated;
* memory bank: a greedy k-center coreset of 1% of the training patches (PatchCore's
  approximate greedy: distances in a random projection to 128 dimensions; the one fftrain's
  memory bank uses, fftrain.memory_bank.greedy_coreset). To fit 2 cores
  the greedy search runs on a random 10% of the patches, so the bank is 1% of all patches
  picked from a tenth of them;
* patch score: Euclidean distance to the nearest bank vector; image score: the largest patch
  score (without PatchCore's neighbourhood re-weighting); map: the patch scores upsampled to
  the input size and smoothed (Gaussian, sigma 4 input pixels).

What a row of this scorer says: whether the backbone's features separate the set's defects
from its normals. Where it beats the flows on the same features, the flows, the map
normalization or the score lose information; where both fail, the features are the limit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fftrain.memory_bank import greedy_coreset

SCALES = (1, 2)  # indices into the backbone's (stride 4, 8, 16) feature list: strides 8 and 16
CORESET_FRACTION = 0.01
SEARCH_FRACTION = 0.1
MAP_SIGMA = 4.0


def patch_features(feats: list[torch.Tensor], scales: tuple[int, ...] = SCALES) -> torch.Tensor:
    """[N, C8 + C16, h8, w8]: the 3x3-aggregated stride-8 and stride-16 maps, concatenated (or
    the maps of other ``scales``, at the first one's resolution)."""
    maps = [F.avg_pool2d(feats[i].float(), 3, stride=1, padding=1, count_include_pad=False) for i in scales]
    size = maps[0].shape[-2:]
    return torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]], 1)


def _as_rows(patches: torch.Tensor) -> torch.Tensor:
    return patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]).contiguous()


class MemoryBank:
    def __init__(self, train_feats: list[torch.Tensor], seed: int = 0, scales: tuple[int, ...] = SCALES):
        self.scales = scales
        rows = _as_rows(patch_features(train_feats, scales))
        g = torch.Generator().manual_seed(seed)
        search = rows[torch.randperm(len(rows), generator=g)[: max(1, int(len(rows) * SEARCH_FRACTION))]]
        n = max(1, int(round(len(rows) * CORESET_FRACTION)))
        self.bank = search[greedy_coreset(search, min(n, len(search)), seed)].contiguous()
        self.patches_seen = len(rows)

    @torch.no_grad()
    def score(self, feats: list[torch.Tensor], image_size: tuple[int, int], batch: int = 16):
        """(scores [N] float64, maps [N, H, W] float32) of feature batches."""
        bank_sq = (self.bank ** 2).sum(1)
        scores, maps = [], []
        radius = max(1, math.ceil(3 * MAP_SIGMA))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / MAP_SIGMA) ** 2)
        kernel = (kernel / kernel.sum())
        for start in range(0, len(feats[0]), batch):
            p = patch_features([f[start : start + batch] for f in feats], self.scales)
            n, _, h, w = p.shape
            rows = _as_rows(p)
            d2 = (rows ** 2).sum(1, keepdim=True) - 2 * rows @ self.bank.T + bank_sq
            dist = d2.min(1).values.clamp_min(0).sqrt().view(n, 1, h, w)
            scores.append(dist.flatten(1).amax(1).double())
            up = F.interpolate(dist, size=image_size, mode="bilinear", align_corners=False)
            up = F.conv2d(F.pad(up, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
            up = F.conv2d(F.pad(up, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
            maps.append(up[:, 0])
        return torch.cat(scores).numpy(), torch.cat(maps).numpy()

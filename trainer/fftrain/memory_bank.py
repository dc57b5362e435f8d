"""A memory bank beside the flows: each image's largest distance from a stride-16 patch to its
nearest normal patch, weighted into the image score where it helps, and each patch's distance,
weighted into the anomaly map where it helps.

Why: on the same backbone features, a nearest-neighbour distance (PatchCore, Roth et al. 2022)
separates some lines' defects better than the flows (issue 21's set A, ELPV's cells) and on
others adds only noise (DeepPCB's boards, where it is at chance). So training decides per line,
on what it can see: the image AUROC of the validation normals against the same normals with
the trainer's hard synthetic defects drawn in, for the flows' score alone and for it plus the
bank's at a few weights (``WEIGHTS``); the bank stays only where a weight beats the flows
alone (``ModelConfig.memory_bank``: auto; on: the best weight in any case; off: never). On
the accuracy suite's development halves this kept the flows alone on DeepPCB and the strip and
raised both ELPV sets by about 0.01 (benchmarks/README.md, "A memory bank beside the flows").

Why stride 16 only and a capped bank: the cost is (patches per image) x (bank vectors) x
channels; at stride 16 an image has 16x fewer patches than at stride 8, so a bank of 1% of
the training patches costs a few ms per image, and ``MAX_VECTORS`` bounds it on large sets.

Patches are PatchCore's: each cell's 3x3 neighbourhood mean (count_include_pad off). The bank
is a greedy k-center coreset (approximate: distances in a random projection, searched among a
random tenth of the patches). In the graph, distances are taken as |x|^2 - 2 x.b + |b|^2 after
subtracting the bank's mean from both, which keeps the terms small where a runtime computes in
BF16; the image score gains ``gain`` x the largest nearest-patch distance, where ``gain`` is
the chosen weight times the flows' score spread over the bank's (on the validation normals),
so the score stays in the flows' units and the weight means the same on every line.

The map is decided the same way and separately (``MAP_WEIGHTS``): the pixel AUROC of those
synthetic defects' masks, for the flows' map alone and for it plus the bank's per-patch
distances (upsampled bilinearly as the head upsamples its scales, standardized by the
validation normals' pixels: ``map_gain`` x (distance - ``map_offset``)). A map a defect
lights up is what an operator checks a rejected part against, and the pixel threshold and the
defect mask follow it. Why separately: the score and the map need different things (on the
synthetic strip the bank adds nothing to the score and localizes better; benchmarks/README.md,
"The bank's distances in the map").
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BANK_STRIDE = 16
CORESET_FRACTION = 0.01
SEARCH_FRACTION = 0.1
MAX_VECTORS = 4096
PROJECTION_DIMS = 128
#: The bank's weights training tries against the flows alone (weight 0). Up to 4 (the bank's
#: term four times the flows'): on a line where the bank separates far better than the flows (issue
#: 21's set A: 0.944 against 0.828 on the same features), equal weight would still let the flows'
#: ranking pull it down.
WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: The weights of the bank's distance map in the anomaly map that training tries against the
#: flows' map alone (weight 0), by the pixel AUROC of the synthetic defects' masks.
MAP_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
#: Under "auto" the bank's map joins only when its best weight beats the flows' map alone by at
#: least this much pixel AUROC on the synthetic defects. A smaller gain is within what a few dozen
#: validation images can tell apart, and such a gain did not carry over to real masks
#: (benchmarks/README.md, "On CFLOW, and a margin for the map").
MAP_MARGIN = 0.01


def patches(feature: torch.Tensor) -> torch.Tensor:
    """[N, h*w, C] float32: each cell's 3x3 neighbourhood mean (the border averages the cells that exist)."""
    pooled = F.avg_pool2d(feature.float(), 3, stride=1, padding=1, count_include_pad=False)
    return pooled.flatten(2).transpose(1, 2)


def greedy_coreset(rows: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``n`` rows picked by greedy k-center (each pick: the row farthest from the
    picks so far), distances measured in a random projection to PROJECTION_DIMS."""
    g = torch.Generator().manual_seed(seed)
    if rows.shape[1] > PROJECTION_DIMS:
        rows = rows @ (torch.randn(rows.shape[1], PROJECTION_DIMS, generator=g) / math.sqrt(PROJECTION_DIMS))
    picked = [int(torch.randint(len(rows), (1,), generator=g))]
    nearest = torch.linalg.vector_norm(rows - rows[picked[0]], dim=1)
    for _ in range(n - 1):
        i = int(torch.argmax(nearest))
        picked.append(i)
        torch.minimum(nearest, torch.linalg.vector_norm(rows - rows[i], dim=1), out=nearest)
    return torch.tensor(picked)


def coreset_vectors(feature: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[M, C]: the bank of the normals' stride-16 features [N, C, h, w]: a coreset of 1% of their
    patches (at most MAX_VECTORS), picked among a random tenth of them."""
    rows = patches(feature).reshape(-1, feature.shape[1])
    g = torch.Generator().manual_seed(seed)
    search = rows[torch.randperm(len(rows), generator=g)[: max(1, int(len(rows) * SEARCH_FRACTION))]]
    n = min(MAX_VECTORS, len(search), max(1, round(len(rows) * CORESET_FRACTION)))
    return search[greedy_coreset(search, n, seed)].contiguous()


class MemoryBankScore(nn.Module):
    """features (the backbone's, one tensor per stride) -> gain x the largest nearest-patch distance
    [N] for the score; with a map term (:meth:`add_map`), also each patch's distance, upsampled to
    the anomaly map and weighted, for the map."""

    def __init__(self, channels: int, vectors: int, scale_index: int, grid: tuple[int, int],
                 map_size: tuple[int, int] | None = None):
        super().__init__()
        self.scale_index = scale_index
        self.grid = tuple(grid)  # the bank stride's feature map (h, w): the distance map's shape
        self.register_buffer("center", torch.zeros(channels))
        self.register_buffer("bank", torch.zeros(vectors, channels))  # centered
        self.register_buffer("bank_sq", torch.zeros(vectors))
        self.register_buffer("gain", torch.zeros(()))
        self.in_map = False
        if map_size is not None:  # a checkpoint's bank that is in the map: its gain and offset load into these
            self.add_map(0.0, 0.0, map_size)

    def add_map(self, gain: float, offset: float, size: tuple[int, int]) -> None:
        """Put the distances into the anomaly map [N, 1, *size] too: ``gain`` x (distance -
        ``offset``), where ``offset`` is the validation normals' mean pixel distance (normal areas
        keep the flows' level)."""
        self.in_map = True
        self.register_buffer("map_gain", torch.tensor(float(gain)))
        self.register_buffer("map_offset", torch.tensor(float(offset)))
        left, right = upsampling(size, self.grid)
        # Derived from the sizes, not state (as the head's fusion matrices).
        self.register_buffer("map_left", left, persistent=False)
        self.register_buffer("map_right", right, persistent=False)

    def set_vectors(self, vectors: torch.Tensor) -> None:
        """The bank [M, C] (M may differ from the size it was built with: a fold's bank)."""
        self.center = vectors.mean(0)
        self.bank = vectors - self.center
        self.bank_sq = (self.bank * self.bank).sum(1)

    def nearest(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[N, h*w]: each patch's distance to its nearest bank vector."""
        rows = patches(features[self.scale_index]) - self.center  # [N, hw, C]
        d2 = (rows * rows).sum(-1, keepdim=True) - 2 * rows @ self.bank.T + self.bank_sq
        # Relu, not a clamp: graph tools read a Clip as a convolution's ReLU6 (INT8 Q/DQ placement).
        return torch.relu(d2.amin(-1)).sqrt()

    def distance(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[N]: the largest, over the image's patches, distance to the nearest bank vector."""
        return self.nearest(features).amax(1)

    def distance_map(self, nearest: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[N, 1, H, W]: :meth:`nearest` upsampled bilinearly to the anomaly map as the head
        upsamples its scales: two products with constant matrices, no full-size resize."""
        left, right = (self.map_left, self.map_right) if self.in_map else upsampling(size, self.grid)
        return left @ nearest.reshape(-1, 1, *self.grid) @ right

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(what the anomaly map [N, 1, *size] gains, None without a map term; what the score [N]
        gains), from one distance computation. (Called as the module, so an exported graph's
        nodes carry its name scope: the FP16 export keeps them FP32 by it.)"""
        nearest = self.nearest(features)
        score = self.gain * nearest.amax(1)
        if not self.in_map:
            return None, score
        return self.map_gain * (self.distance_map(nearest, size) - self.map_offset), score


def upsampling(size: tuple[int, int], grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(left [H, h], right [w, W]): ``left @ m @ right`` is the bilinear resize of m [h, w] to
    ``size`` (align_corners False, as F.interpolate)."""
    from .resize import bilinear_matrix

    return bilinear_matrix(size[0], grid[0]).float(), bilinear_matrix(size[1], grid[1]).T.contiguous().float()


def separation(normal: np.ndarray, defective: np.ndarray) -> float:
    """Image AUROC of ``normal`` against ``defective`` scores: the trainer's synthetic check (the
    epoch selection's figure, and the bank's)."""
    from ffcore.metrics import roc_auc

    return float(roc_auc(np.r_[np.zeros(len(normal)), np.ones(len(defective))], np.r_[normal, defective]))


def _best(tried: dict[float, float]) -> float:
    return max(tried, key=lambda w: (tried[w], -w))  # ties: the smaller weight


def _candidates(weights: tuple[float, ...], choice: Literal["auto", "on"]) -> tuple[float, ...]:
    return ((0.0,) if choice == "auto" else ()) + weights


def choose_weight(flows: dict[str, np.ndarray], bank: dict[str, np.ndarray],
                  choice: Literal["auto", "on"]) -> tuple[float, dict[float, float]]:
    """(weight, the synthetic AUROC of each weight tried): scores of the validation normals
    ("val") and of their synthetic defects ("synthetic") by the flows and by the bank, each
    standardized by the validation normals; weight 0 = the flows alone (not a candidate for
    "on"). Ties go to the smaller weight."""
    def standardized(s: dict[str, np.ndarray], k: str) -> np.ndarray:
        return (s[k] - s["val"].mean()) / s["val"].std()

    tried = {w: separation(*(standardized(flows, k) + w * standardized(bank, k) for k in ("val", "synthetic")))
             for w in _candidates(WEIGHTS, choice)}
    return _best(tried), tried


def choose_map_weight(flows: np.ndarray, bank: np.ndarray, masks: np.ndarray, normals: int,
                      choice: Literal["auto", "on"]) -> tuple[float, dict[float, float]]:
    """(weight, the pixel AUROC of each weight tried) of the bank's distance map in the anomaly
    map: maps [N, h, w] of the validation normals (the first ``normals``) and of their synthetic
    defects, by the flows and by the bank (the bank's standardized by the normals' pixels), and
    the defects' masks [N - normals, h, w]; weight 0 = the flows' map alone (not a candidate for
    "on"). Ties go to the smaller weight; under "auto" a weight must beat the flows' map alone by
    MAP_MARGIN."""
    from ffcore.metrics import pixel_auroc

    normal = bank[:normals]
    scaled = (bank - normal.mean()) / normal.std()
    truth = np.concatenate([np.zeros((normals, *masks.shape[1:]), bool), masks.astype(bool)])
    tried = {w: float(pixel_auroc(truth, flows + np.float32(w) * scaled)) for w in _candidates(MAP_WEIGHTS, choice)}
    best = _best(tried)
    if choice == "auto" and tried[best] - tried[0.0] < MAP_MARGIN:
        best = 0.0
    return best, tried

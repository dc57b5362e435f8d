"""A memory bank beside the flows: each image's largest distance from a stride-16 patch to its
nearest normal patch, weighted into the image score where it helps.

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
    """features (the backbone's, one tensor per stride) -> gain x the largest nearest-patch distance [N]."""

    def __init__(self, channels: int, vectors: int, scale_index: int):
        super().__init__()
        self.scale_index = scale_index
        self.register_buffer("center", torch.zeros(channels))
        self.register_buffer("bank", torch.zeros(vectors, channels))  # centered
        self.register_buffer("bank_sq", torch.zeros(vectors))
        self.register_buffer("gain", torch.zeros(()))

    def set_vectors(self, vectors: torch.Tensor) -> None:
        """The bank [M, C] (M may differ from the size it was built with: a fold's bank)."""
        self.center = vectors.mean(0)
        self.bank = vectors - self.center
        self.bank_sq = (self.bank * self.bank).sum(1)

    def distance(self, features: list[torch.Tensor]) -> torch.Tensor:
        """[N]: the largest, over the image's patches, distance to the nearest bank vector."""
        rows = patches(features[self.scale_index]) - self.center  # [N, hw, C]
        d2 = (rows * rows).sum(-1, keepdim=True) - 2 * rows @ self.bank.T + self.bank_sq
        # Relu, not a clamp: graph tools read a Clip as a convolution's ReLU6 (INT8 Q/DQ placement).
        return torch.relu(d2.amin(-1)).sqrt().amax(1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.gain * self.distance(features)


def separation(normal: np.ndarray, defective: np.ndarray) -> float:
    """Image AUROC of ``normal`` against ``defective`` scores: the trainer's synthetic check (the
    epoch selection's figure, and the bank's)."""
    from ffcore.metrics import roc_auc

    return float(roc_auc(np.r_[np.zeros(len(normal)), np.ones(len(defective))], np.r_[normal, defective]))


def choose_weight(flows: dict[str, np.ndarray], bank: dict[str, np.ndarray],
                  choice: Literal["auto", "on"]) -> tuple[float, dict[float, float]]:
    """(weight, the synthetic AUROC of each weight tried): scores of the validation normals
    ("val") and of their synthetic defects ("synthetic") by the flows and by the bank, each
    standardized by the validation normals; weight 0 = the flows alone (not a candidate for
    "on"). Ties go to the smaller weight."""
    def standardized(s: dict[str, np.ndarray], k: str) -> np.ndarray:
        return (s[k] - s["val"].mean()) / s["val"].std()

    tried = {w: separation(*(standardized(flows, k) + w * standardized(bank, k) for k in ("val", "synthetic")))
             for w in ((0.0,) if choice == "auto" else ()) + WEIGHTS}
    return max(tried, key=lambda w: (tried[w], -w)), tried

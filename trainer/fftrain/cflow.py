"""CFLOW-AD's decoder (Gudovskiy et al. 2022, ../shared/papers/cflow-ad-conditional-flows.md),
the form that trains.

One decoder per feature scale models the density of the feature *vectors* of that scale (one
position of the map, all its channels) given where they sit: a sequence of conditional affine
couplings, each a fully connected subnet over the kept half of the channels concatenated with
the condition, the condition being the paper's 2D sinusoidal positional encoding of the
position (its Section 4.2). Scales are soft-clamped, the channels permuted by a fixed random
permutation after every coupling, and each coupling ends in a learned per-channel affine (the
"global affine" of the coupling blocks the paper's code uses).

Training reads vectors, not maps (the paper's Section 5.1): thousands of positions drawn at
random from a batch of training maps per optimizer step (:meth:`CflowDecoder.sample`), so one
step costs what its vectors cost whatever the map size. What ships is cflow_conv.py: the same
function written as 1x1 convolutions over whole maps.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def positional_encoding(channels: int, height: int, width: int) -> torch.Tensor:
    """[channels, height, width]: the first half of the channels encodes the column, the second
    half the row, each as sine/cosine pairs at the frequencies 1 / 10000^(2i / half) of the
    transformer encoding (Vaswani et al. 2017), in feature-map pixels."""
    if channels < 4 or channels % 4:
        raise ValueError(f"the positional encoding needs a multiple of 4 channels (got {channels})")
    half = channels // 2
    frequency = torch.exp(torch.arange(0, half, 2, dtype=torch.float64) * (-math.log(10000.0) / half))
    columns = torch.arange(width, dtype=torch.float64)[:, None] * frequency  # [w, half/2]
    rows = torch.arange(height, dtype=torch.float64)[:, None] * frequency  # [h, half/2]
    pe = torch.zeros(channels, height, width, dtype=torch.float64)
    pe[0:half:2] = torch.sin(columns).T[:, None, :]
    pe[1:half:2] = torch.cos(columns).T[:, None, :]
    pe[half::2] = torch.sin(rows).T[:, :, None]
    pe[half + 1 :: 2] = torch.cos(rows).T[:, :, None]
    return pe.float()


def subnet_hidden_channels(channels: int, condition: int, hidden_ratio: float) -> int:
    """Hidden width of a coupling subnet: ``hidden_ratio`` x its input width (the kept half of
    the channels plus the condition; the paper's code uses 2)."""
    return max(1, int((channels // 2 + condition) * hidden_ratio))


class ConditionalCoupling(nn.Module):
    """x [P, C] given condition [P, D] -> (y [P, C], log|det J| [P])."""

    def __init__(self, channels: int, condition: int, hidden: int, clamp: float, permutation: torch.Tensor):
        super().__init__()
        self.kept = channels // 2
        changed = channels - self.kept
        self.clamp = clamp
        self.subnet = nn.Sequential(nn.Linear(self.kept + condition, hidden), nn.ReLU(), nn.Linear(hidden, 2 * changed))
        # Every coupling starts as the identity, so training starts from a well-defined flow.
        nn.init.zeros_(self.subnet[-1].weight)
        nn.init.zeros_(self.subnet[-1].bias)
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.register_buffer("permutation", permutation.clone())

    def _scale_shift(self, kept: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.subnet(torch.cat([kept, condition], dim=1)).chunk(2, dim=1)
        # Soft clamp: exp(scale) stays within e^{+-clamp}, so one unusual vector cannot make
        # the log-likelihood explode.
        return self.clamp * torch.tanh(raw_scale / self.clamp), shift

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, changed = x[:, : self.kept], x[:, self.kept :]
        scale, shift = self._scale_shift(kept, condition)
        y = torch.cat([kept, changed * torch.exp(scale) + shift], dim=1) * torch.exp(self.log_scale) + self.shift
        return y[:, self.permutation], scale.sum(dim=1) + self.log_scale.sum()


class CflowDecoder(nn.Module):
    """The couplings of one feature scale of a map of ``map_size`` (height, width), and that
    map's positional encoding (derived from the configuration, so not part of the state)."""

    def __init__(self, channels: int, map_size: tuple[int, int], steps: int, hidden: int, condition: int,
                 clamp: float, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)  # fixed permutations: reproducible
        self.steps = nn.ModuleList(
            ConditionalCoupling(channels, condition, hidden, clamp, torch.randperm(channels, generator=generator))
            for _ in range(steps)
        )
        self.register_buffer("condition", positional_encoding(condition, *map_size), persistent=False)

    def fibers(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature vectors [P, C] with their conditions [P, D] -> (z [P, C], log|det J| [P])."""
        logdet = torch.zeros_like(x[:, 0])
        for step in self.steps:
            x, step_logdet = step(x, condition)
            logdet = logdet + step_logdet
        return x, logdet

    def _flat_condition(self) -> torch.Tensor:
        return self.condition.flatten(1).T  # [h * w, D], positions in row-major order

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position of maps [N, C, h, w] -> (z [N, C, h, w], log|det J| [N, h, w])."""
        n, c, h, w = x.shape
        condition = self._flat_condition().to(x.dtype).repeat(n, 1)
        z, logdet = self.fibers(x.permute(0, 2, 3, 1).reshape(-1, c), condition)
        return z.view(n, h, w, c).permute(0, 3, 1, 2), logdet.view(n, h, w)

    def sample(self, x: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` feature vectors [count, C] drawn uniformly from all positions of maps
        [N, C, h, w] (with replacement), and their conditions [count, D]."""
        n, c, h, w = x.shape
        index = torch.randint(n * h * w, (count,), generator=generator)
        vectors = x.permute(0, 2, 3, 1).reshape(-1, c)[index]
        return vectors, self._flat_condition().to(x.dtype)[index % (h * w)]

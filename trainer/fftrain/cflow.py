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
random from a batch of training maps per optimizer step (:meth:`CflowDecoder.sample`,
:meth:`CflowDecoder.at_positions`), so one step costs what its vectors cost whatever the map
size. What ships is cflow_conv.py: the same function written as 1x1 convolutions over whole maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
    """x [..., C] -> (y [..., C], log|det J| [...]) given the condition's term of the subnet.

    The subnet is two fully connected layers, the first over cat(kept half, condition). That
    layer is evaluated as ``W_kept kept + b + W_condition condition``, its second part being
    :meth:`condition_term`: a function of the position alone, so a map's positions need it
    once, not once per image or per drawn vector.
    """

    def __init__(self, channels: int, condition: int, hidden: int, clamp: float, permutation: torch.Tensor):
        super().__init__()
        self.kept = channels // 2
        changed = channels - self.kept
        self.clamp = clamp
        self.inner = nn.Linear(self.kept + condition, hidden)  # over cat(kept, condition)
        self.outer = nn.Linear(hidden, 2 * changed)  # -> raw log-scales and shifts of the changed half
        # Every coupling starts as the identity, so training starts from a well-defined flow.
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.register_buffer("permutation", permutation.clone())

    def condition_term(self, condition: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., hidden]: what the first layer adds for this condition."""
        return F.linear(condition, self.inner.weight[:, self.kept :])

    def forward(self, x: torch.Tensor, condition_term: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, changed = x[..., : self.kept], x[..., self.kept :]
        hidden = torch.relu(F.linear(kept, self.inner.weight[:, : self.kept], self.inner.bias) + condition_term)
        raw_scale, shift = self.outer(hidden).chunk(2, dim=-1)
        # Soft clamp: exp(scale) stays within e^{+-clamp}, so one unusual vector cannot make
        # the log-likelihood explode.
        scale = self.clamp * torch.tanh(raw_scale / self.clamp)
        y = torch.cat([kept, changed * torch.exp(scale) + shift], dim=-1) * torch.exp(self.log_scale) + self.shift
        return y[..., self.permutation], scale.sum(dim=-1) + self.log_scale.sum()


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

    def _couple(self, x: torch.Tensor, terms) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros_like(x[..., 0])
        for step, term in zip(self.steps, terms):
            x, step_logdet = step(x, term)
            logdet = logdet + step_logdet
        return x, logdet

    def _position_terms(self, dtype: torch.dtype):
        """Each coupling's condition term at every position of the map: [h * w, hidden] (row-major)."""
        flat = self.condition.flatten(1).T.to(dtype)
        return (step.condition_term(flat) for step in self.steps)

    def fibers(self, x: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature vectors [P, C] with their conditions [P, D] -> (z [P, C], log|det J| [P]):
        the decoder as the paper writes it, one vector at a time."""
        return self._couple(x, (step.condition_term(condition) for step in self.steps))

    def at_positions(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature vectors [P, C] taken at ``positions`` [P] (row-major indices into the map) ->
        (z [P, C], log|det J| [P])."""
        return self._couple(x, (term[positions] for term in self._position_terms(x.dtype)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position of maps [N, C, h, w] -> (z [N, C, h, w], log|det J| [N, h, w])."""
        n, c, h, w = x.shape
        z, logdet = self._couple(x.flatten(2).transpose(1, 2), self._position_terms(x.dtype))  # [N, h*w, C]
        return z.transpose(1, 2).reshape(n, c, h, w), logdet.view(n, h, w)

    def sample(self, x: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``count`` feature vectors [count, C] drawn uniformly from all positions of maps
        [N, C, h, w] (with replacement), and where they were in their map (row-major indices)."""
        n, c, h, w = x.shape
        index = torch.randint(n * h * w, (count,), generator=generator)
        return x.flatten(2).transpose(1, 2).reshape(-1, c)[index], index % (h * w)

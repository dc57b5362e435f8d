"""The 2D normalizing flow of FastFlow (Yu et al. 2021, ../shared/papers/).

One ``FlowStep`` is an affine coupling whose scale and shift come from a small
fully-convolutional subnet, followed by a learned per-channel affine and a fixed channel
permutation. This is the form that trains (log-determinant, inverse); no in-place ops and
no data-dependent control flow. What ships is derived from it by fused_flow.py: the same
function with the affine and the permutation folded into 1x1 convolutions, because CPU
runtimes run a per-step split, concatenation and channel gather as copies outside their
convolution layouts, which costs more than those 1x1 convolutions' multiply-accumulates.
"""

from __future__ import annotations

import torch
from torch import nn


class CouplingSubnet(nn.Sequential):
    """conv(k) -> ReLU -> conv(k): maps the kept half to scale and shift for the other half."""

    def __init__(self, c_in: int, c_out: int, hidden: int, kernel: int):
        super().__init__(
            nn.Conv2d(c_in, hidden, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv2d(hidden, c_out, kernel, padding=kernel // 2),
        )
        # Start every step as the identity (Glow): training begins from a well-defined
        # flow instead of a random, badly conditioned one.
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


def subnet_hidden_channels(channels: int, hidden_ratio: float) -> int:
    """Hidden width of a coupling subnet as the paper defines its ratio (Table 7: hidden
    channels / the subnet's *input* channels, i.e. half the feature channels) and as the
    reference implementations compute it (truncated)."""
    return max(1, int((channels // 2) * hidden_ratio))


class FlowStep(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel: int, clamp: float, permutation: torch.Tensor):
        super().__init__()
        self.kept = channels // 2
        changed = channels - self.kept
        self.clamp = clamp
        self.subnet = CouplingSubnet(self.kept, 2 * changed, hidden, kernel)
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("permutation", permutation.clone())
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _scale_shift(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_scale, shift = self.subnet(kept).chunk(2, dim=1)
        # Soft clamp keeps exp(scale) within e^{+-clamp}: unbounded scales make the
        # log-likelihood explode on the first out-of-distribution feature.
        scale = self.clamp * torch.tanh(raw_scale / self.clamp)
        return scale, shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (y, log|det J| per position [N, H, W])."""
        kept, changed = x[:, : self.kept], x[:, self.kept :]
        scale, shift = self._scale_shift(kept)
        y = torch.cat([kept, changed * torch.exp(scale) + shift], dim=1)
        y = y * torch.exp(self.log_scale) + self.shift
        logdet = scale.sum(dim=1) + self.log_scale.sum()
        return torch.index_select(y, 1, self.permutation), logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y = torch.index_select(y, 1, self.inverse_permutation)
        y = (y - self.shift) * torch.exp(-self.log_scale)
        kept, changed = y[:, : self.kept], y[:, self.kept :]
        scale, shift = self._scale_shift(kept)
        return torch.cat([kept, (changed - shift) * torch.exp(-scale)], dim=1)


class Flow2d(nn.Module):
    """K flow steps on one feature scale. Kernels alternate 3x3/1x1 unless ``conv3x3_only``
    (the paper prefers 3x3 only for small backbones such as ResNet-18)."""

    def __init__(self, channels: int, steps: int, hidden: int, conv3x3_only: bool, clamp: float, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)  # fixed permutations: reproducible
        self.steps = nn.ModuleList(
            FlowStep(
                channels,
                hidden,
                kernel=3 if (conv3x3_only or i % 2 == 0) else 1,
                clamp=clamp,
                permutation=torch.randperm(channels, generator=generator),
            )
            for i in range(steps)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (z, total log|det J| per position [N, H, W])."""
        logdet = torch.zeros_like(x[:, 0])
        for step in self.steps:
            x, step_logdet = step(x)
            logdet = logdet + step_logdet
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z

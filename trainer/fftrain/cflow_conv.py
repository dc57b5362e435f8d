"""The CFLOW decoder as it ships: every position of a whole map at once, as 1x1 convolutions.

A coupling's subnet is fully connected over channels and shared by all positions, so applying
it to every feature vector of a map is a 1x1 convolution: an exact rewrite of the reference
implementation's loop over batches of vectors, with no loop left in the graph. Its first layer
reads cat(kept, condition); written as ``W_kept * kept + (W_condition * PE + b)`` the second term
depends only on the positional encoding, which is a constant of the graph ([1, D, h, w],
broadcast over the batch), so a runtime may fold it once when it loads the model. The rest is
fused_flow.py's form of a coupling: the clamp folded into the scale half, and "affine, permute,
split" as 1x1 mixing convolutions on the two halves of the state (the last coupling's
permutation left out: the head only reduces over channels).

The log-determinant is the sum over couplings of the clamped log-scales summed over channels,
plus the per-channel affines' constant. Forward only. tests/trainer/test_cflow.py compares it
with the trained ``CflowDecoder`` position by position.
"""

from __future__ import annotations

import torch
from torch import nn

from .cflow import CflowDecoder, ConditionalCoupling
from .fused_flow import FusedCoupling, TwoInputConv, fixed_conv
from .head import ScaleLatent


def _pointwise(weight: torch.Tensor) -> torch.Tensor:
    """A fully connected layer's weight [out, in] as a 1x1 convolution's [out, in, 1, 1]."""
    return weight.detach()[:, :, None, None]


class ConvCoupling(FusedCoupling):
    def __init__(self, coupling: ConditionalCoupling, last: bool):
        kept = coupling.kept
        weight = _pointwise(coupling.inner.weight)
        # Subnet input = cat(kept, condition): its first layer is one convolution per part.
        hidden = TwoInputConv(fixed_conv(weight[:, :kept], coupling.inner.bias.detach(), 0),
                              fixed_conv(weight[:, kept:], None, 0))
        super().__init__(hidden, _pointwise(coupling.outer.weight), coupling.outer.bias, 0, coupling.clamp,
                         coupling.log_scale, coupling.shift, coupling.permutation, kept, last)

    def forward(self, kept: torch.Tensor, changed: torch.Tensor,
                condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next kept half, next changed half, this coupling's log|det J| [N, h, w] without the
        affine's constant)."""
        kept, changed, scale = self.couple(torch.relu(self.hidden(kept, condition)), kept, changed)
        return kept, changed, scale.sum(dim=1)


class ConvCflowDecoder(nn.Module):
    """``CflowDecoder`` for inference: maps [N, C, h, w] -> ScaleLatent(z as (kept, changed)
    halves, log|det J| [N, h, w])."""

    def __init__(self, decoder: CflowDecoder):
        super().__init__()
        steps = list(decoder.steps)
        self.kept = steps[0].kept
        self.register_buffer("condition", decoder.condition[None].clone())
        self.steps = nn.ModuleList(ConvCoupling(s, last=i == len(steps) - 1) for i, s in enumerate(steps))
        affine = sum(float(s.log_scale.detach().double().sum()) for s in steps)
        self.register_buffer("affine_logdet", torch.tensor(affine, dtype=decoder.condition.dtype))

    def forward(self, x: torch.Tensor) -> ScaleLatent:
        kept, changed = x[:, : self.kept], x[:, self.kept :]
        logdet = self.affine_logdet
        for step in self.steps:
            kept, changed, step_logdet = step(kept, changed, self.condition)
            logdet = logdet + step_logdet
        return ScaleLatent((kept, changed), logdet)

"""The flow as it ships: the same function as a trained ``Flow2d``, rewritten so that a runtime
only ever runs convolutions and element-wise operations.

A trained step computes ``y = cat(kept, changed * exp(s) + t) * A + B`` and then permutes
y's channels; the next step splits the result into halves again. Written that way every step
costs a split, a concatenation and a channel gather, which CPU runtimes run as plain memory
copies outside their blocked convolution layouts (OpenVINO and ONNX Runtime both reorder
the whole tensor around each one; benchmarks/peers has the profile). Here the state is kept
as its two halves, and "affine, permute, split" becomes four 1x1 convolutions whose weights
hold the permutation with the affine scale (one non-zero per row) and whose bias holds the
shift: ``kept' = P_kk kept + P_kc changed' + B_k``, ``changed' = P_ck kept + P_cc changed' + B_c``.
The coupling subnet's last convolution is split into its scale and shift halves, and the
soft clamp's 1/clamp is folded into the scale half.

The last step's permutation is left out: the anomaly head only reduces over channels
(0.5 * mean_c z^2), so the order of z's channels does not change the map. Forward only (no
log-determinant: inference never needs it). In FP32 every change is exact up to the order
of float operations; tests/trainer/test_fused_flow.py compares it with ``Flow2d`` on real
features.
"""

from __future__ import annotations

import torch
from torch import nn

from .flow import Flow2d, FlowStep


def fixed_conv(weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> nn.Conv2d:
    """A Conv2d holding exactly ``weight`` [out, in, k, k] and ``bias``, in their dtype."""
    out_c, in_c, k, _ = weight.shape
    conv = nn.Conv2d(in_c, out_c, k, padding=padding, bias=bias is not None)
    conv = conv.to(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


class TwoInputConv(nn.Module):
    """out = conv(a) + conv(b): a convolution over two tensors' channels without concatenating
    them. One half of "affine, permute, split" (a = kept, b = changed); in cflow_conv.py a
    conditional coupling's first layer (a = kept, b = the positional encoding)."""

    def __init__(self, from_kept: nn.Conv2d, from_changed: nn.Conv2d):
        super().__init__()
        self.from_kept = from_kept
        self.from_changed = from_changed

    def forward(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return self.from_kept(kept) + self.from_changed(changed)


def permuted_halves(scale: torch.Tensor, offset: torch.Tensor, permutation: torch.Tensor, kept: int,
                    dtype: torch.dtype) -> tuple[TwoInputConv, TwoInputConv]:
    """"y = cat(kept, changed) * scale + offset, permute y's channels, split into halves again"
    as two ``TwoInputConv`` (the next kept half, the next changed half): each output channel reads the one
    input channel the permutation names, times its scale (one non-zero per row), plus its offset.
    ``scale``/``offset``: float64 per channel of y."""
    perm = permutation.tolist()
    channels = len(perm)
    changed = channels - kept

    def mix(rows: range) -> TwoInputConv:
        w_kept = torch.zeros(len(rows), kept, 1, 1, dtype=torch.float64)
        w_changed = torch.zeros(len(rows), changed, 1, 1, dtype=torch.float64)
        bias = torch.zeros(len(rows), dtype=torch.float64)
        for i, row in enumerate(rows):
            src = perm[row]
            if src < kept:
                w_kept[i, src] = scale[src]
            else:
                w_changed[i, src - kept] = scale[src]
            bias[i] = offset[src]
        return TwoInputConv(fixed_conv(w_kept.to(dtype), bias.to(dtype), 0),
                            fixed_conv(w_changed.to(dtype), None, 0))

    return mix(range(0, kept)), mix(range(kept, channels))


class FusedCoupling(nn.Module):
    """What every shipped coupling step shares, whatever computes its subnet's hidden layer:
    the subnet's last layer split into its scale and shift halves (1/clamp folded into the
    scale half), the affine coupling itself, then "affine, permute, split" as 1x1 mixing
    convolutions (or, in the last step, the affine alone)."""

    def __init__(self, hidden: nn.Module, out_weight: torch.Tensor, out_bias: torch.Tensor, padding: int,
                 clamp: float, log_scale: torch.Tensor, shift: torch.Tensor, permutation: torch.Tensor, kept: int,
                 last: bool):
        super().__init__()
        self.hidden = hidden  # the subnet's first layer, before its ReLU
        dtype = out_weight.dtype
        changed = out_weight.shape[0] // 2
        self.last = last
        self.clamp = float(clamp)
        # Scale half with 1/clamp folded in; shift half as it was.
        w, b = out_weight.detach().double(), out_bias.detach().double()
        self.raw_scale = fixed_conv((w[:changed] / self.clamp).to(dtype), (b[:changed] / self.clamp).to(dtype),
                                    padding)
        self.shift = fixed_conv(w[changed:].to(dtype), b[changed:].to(dtype), padding)

        scale = torch.exp(log_scale.detach().double().flatten())  # A, per channel of y
        offset = shift.detach().double().flatten()  # B
        if last:
            # z = y * A + B, channel order as y (see the module docstring).
            for name, part in (("kept", slice(0, kept)), ("changed", slice(kept, None))):
                self.register_buffer(f"{name}_scale", scale[part].view(1, -1, 1, 1).to(dtype))
                self.register_buffer(f"{name}_offset", offset[part].view(1, -1, 1, 1).to(dtype))
            return
        self.to_kept, self.to_changed = permuted_halves(scale, offset, permutation, kept, dtype)

    def couple(self, hidden: torch.Tensor, kept: torch.Tensor,
               changed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(next kept half, next changed half, the clamped log-scales s) from the subnet's hidden layer."""
        scale = self.clamp * torch.tanh(self.raw_scale(hidden))
        changed = changed * torch.exp(scale) + self.shift(hidden)
        if self.last:
            return kept * self.kept_scale + self.kept_offset, changed * self.changed_scale + self.changed_offset, scale
        return self.to_kept(kept, changed), self.to_changed(kept, changed), scale


class FusedFlowStep(FusedCoupling):
    def __init__(self, step: FlowStep, last: bool):
        first, _, second = step.subnet
        super().__init__(first, second.weight, second.bias, second.padding[0], step.clamp, step.log_scale,
                         step.shift, step.permutation, step.kept, last)

    def forward(self, kept: torch.Tensor, changed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, changed, _ = self.couple(torch.relu(self.hidden(kept)), kept, changed)
        return kept, changed


class FusedFlow2d(nn.Module):
    """``Flow2d`` for inference: features [N, C, h, w] -> z as (kept, changed) halves whose
    channels together are z's channels in some fixed order."""

    def __init__(self, flow: Flow2d):
        super().__init__()
        steps = list(flow.steps)
        self.kept = steps[0].kept
        self.steps = nn.ModuleList(FusedFlowStep(s, last=i == len(steps) - 1) for i, s in enumerate(steps))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, changed = x[:, : self.kept], x[:, self.kept :]
        for step in self.steps:
            kept, changed = step(kept, changed)
        return kept, changed

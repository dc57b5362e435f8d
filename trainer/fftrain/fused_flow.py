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


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> nn.Conv2d:
    out_c, in_c, k, _ = weight.shape
    conv = nn.Conv2d(in_c, out_c, k, padding=padding, bias=bias is not None)
    conv = conv.to(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


class _Mix(nn.Module):
    """out = conv(kept) + conv(changed): one half of "affine, permute, split"."""

    def __init__(self, from_kept: nn.Conv2d, from_changed: nn.Conv2d):
        super().__init__()
        self.from_kept = from_kept
        self.from_changed = from_changed

    def forward(self, kept: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return self.from_kept(kept) + self.from_changed(changed)


class FusedFlowStep(nn.Module):
    def __init__(self, step: FlowStep, last: bool):
        super().__init__()
        first, _, second = step.subnet
        dtype = second.weight.dtype
        pad = second.padding[0]
        kept, changed = step.kept, second.out_channels // 2
        self.last = last
        self.clamp = float(step.clamp)
        self.hidden = first
        # Scale half with 1/clamp folded in; shift half as it was.
        w, b = second.weight.double(), second.bias.double()
        self.raw_scale = _conv((w[:changed] / self.clamp).to(dtype), (b[:changed] / self.clamp).to(dtype), pad)
        self.shift = _conv(w[changed:].to(dtype), b[changed:].to(dtype), pad)

        scale = torch.exp(step.log_scale.detach().double().flatten())  # A, per channel of y
        offset = step.shift.detach().double().flatten()  # B
        if last:
            # z = y * A + B, channel order as y (see the module docstring).
            for name, part in (("kept", slice(0, kept)), ("changed", slice(kept, None))):
                self.register_buffer(f"{name}_scale", scale[part].view(1, -1, 1, 1).to(dtype))
                self.register_buffer(f"{name}_offset", offset[part].view(1, -1, 1, 1).to(dtype))
            return
        perm = step.permutation.tolist()
        channels = kept + changed

        def mix(rows: range) -> _Mix:
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
            return _Mix(_conv(w_kept.to(dtype), bias.to(dtype), 0), _conv(w_changed.to(dtype), None, 0))

        self.to_kept = mix(range(0, kept))
        self.to_changed = mix(range(kept, channels))

    def forward(self, kept: torch.Tensor, changed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.hidden(kept))
        scale = self.clamp * torch.tanh(self.raw_scale(hidden))
        changed = changed * torch.exp(scale) + self.shift(hidden)
        if self.last:
            return kept * self.kept_scale + self.kept_offset, changed * self.changed_scale + self.changed_offset
        return self.to_kept(kept, changed), self.to_changed(kept, changed)


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

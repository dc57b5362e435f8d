"""Bilinear resizing and Gaussian blurring as matrices, so the head's "upsample every scale,
average, blur" becomes ``sum_s L_s @ M_s @ R_s^T``.

Both operations are linear and separable: resizing an [h, w] map to [H, W] is ``U_H @ M @
U_W^T`` with U the 1-D interpolation matrix, and a separable blur with replicated edges is
``B_H @ X @ B_W^T``. Composing them, with the 1/S of the mean over S scales folded into the
left factor, gives one left matrix per scale (stacked side by side into ``left`` [H, sum h])
and one right matrix per scale (``right_s`` [w_s, W]); the head then computes
``left @ cat_s(M_s @ right_s)`` (see AnomalyHead.fuse). Built in float64, stored in float32.

Every runtime takes these as plain MatMuls with a constant operand broadcast over the batch
(ONNX MatMul's numpy broadcasting; TensorRT's MatrixMultiply broadcasts a dimension of
length 1: docs.nvidia.com/deeplearning/tensorrt/operators/docs/MatrixMultiply.html).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


def bilinear_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """[out, in] matrix of 1-D linear interpolation as ``F.interpolate(mode="bilinear",
    align_corners=False)`` computes it for an explicit output size: source coordinate
    ``(i + 0.5) * in / out - 0.5``, clamped at 0, neighbours clamped at the last index."""
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    ratio = in_size / out_size
    for i in range(out_size):
        src = max((i + 0.5) * ratio - 0.5, 0.0)
        lo = min(int(math.floor(src)), in_size - 1)
        hi = min(lo + 1, in_size - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """[size, size] matrix of a 1-D Gaussian (radius ceil(3 sigma), normalized) with
    replicated edges, the head's blur."""
    if sigma <= 0:
        return torch.eye(size, dtype=torch.float64)
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).float().double()  # the head's blur kernel is stored in float32
    m = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        for k, weight in zip(range(-radius, radius + 1), kernel.tolist()):
            m[i, min(max(i + k, 0), size - 1)] += weight
    return m


def fusion_matrices(image_size: Sequence[int], map_shapes: Sequence[tuple[int, int]],
                    blur_sigma: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(left [H, sum h], [right_s [w_s, W]]) for maps of ``map_shapes`` fused to ``image_size``."""
    height, width = image_size
    scales = len(map_shapes)
    blur_h, blur_w = blur_matrix(height, blur_sigma), blur_matrix(width, blur_sigma)
    left = torch.cat([blur_h @ bilinear_matrix(height, h) / scales for h, _ in map_shapes], dim=1)
    rights = [(blur_w @ bilinear_matrix(width, w)).T.contiguous().float() for _, w in map_shapes]
    return left.float(), rights

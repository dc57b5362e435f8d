"""Spearman rank correlation: how the FP16, INT8 and BF16 gates compare a reduced-precision
file's ranking of parts with FP32's."""

from __future__ import annotations

import numpy as np


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks with ties given their average rank; O(n log n)."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    starts = np.r_[0, np.flatnonzero(sx[1:] != sx[:-1]) + 1]
    ends = np.r_[starts[1:], sx.size]
    avg = (starts + ends - 1) / 2.0
    r = np.empty(x.size)
    r[order] = np.repeat(avg, ends - starts)
    return r


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long samples (average ranks for ties).

    **Zero-variance rule** (the one both reduced-precision gates rely on): when a sample
    has no variance its ranks carry no order, and the correlation is undefined. If *both*
    samples are constant they rank the images identically (every pair tied on both sides)
    and the result is 1.0; if only *one* is constant, the order of the other is lost
    entirely and the result is 0.0, so a reduced-precision file that collapses every score
    to one value fails any gate (FP16 and INT8 both require a positive minimum).

    Raises ValueError on different lengths, fewer than 2 values, or NaN.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size != b.size or a.size < 2:
        raise ValueError("spearman needs two equally long samples of at least 2 values")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("spearman: samples contain NaN")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    va, vb = float((ra * ra).sum()), float((rb * rb).sum())
    if va == 0.0 or vb == 0.0:
        return 1.0 if va == vb else 0.0
    return float((ra * rb).sum() / np.sqrt(va * vb))

"""Synthetic defects drawn onto REAL normal images, with exact pixel masks.

Used where real pixel-level ground truth does not exist (ELPV has image labels only):
for model selection during training (validation AUROC on held-out normals vs. the same
normals with a drawn defect) and for pixel-level tests. Every figure computed on these
images is labelled "synthetic" where it is reported: it measures sensitivity to this
kind of defect, not accuracy on real ones.

The shapes imitate what electroluminescence and surface inspection show: thin dark
cracks (random-walk polylines), dark inactive regions (soft-edged blobs) and bright
scratches.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("crack", "dark_region", "scratch")


def _crack(size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    point = rng.uniform(0.15, 0.85, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    thickness = int(rng.integers(1, max(2, size // 96) + 1))
    for _ in range(int(rng.integers(3, 8))):
        angle += rng.normal(0, 0.5)  # cracks wander but keep a direction
        step = rng.uniform(0.04, 0.12) * size
        nxt = np.clip(point + step * np.array([np.cos(angle), np.sin(angle)]), 0, size - 1)
        cv2.line(canvas, tuple(int(v) for v in point), tuple(int(v) for v in nxt), 255, thickness, cv2.LINE_AA)
        point = nxt
    return canvas


def _dark_region(size: int, rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    center = tuple(int(v) for v in rng.uniform(0.2, 0.8, 2) * size)
    axes = tuple(int(v) for v in rng.uniform(0.04, 0.12, 2) * size)
    cv2.ellipse(canvas, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(canvas, (0, 0), sigmaX=max(1.0, size / 128))


def add_defect(image: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (a copy of ``image`` with one defect, bool mask of the defect)."""
    size = image.shape[0]
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind == "crack":
        alpha = _crack(size, rng)
        target = np.zeros_like(image, dtype=np.float32) + rng.uniform(0, 40)  # nearly black line
    elif kind == "dark_region":
        alpha = _dark_region(size, rng)
        target = image.astype(np.float32) * rng.uniform(0.2, 0.5)
    elif kind == "scratch":
        alpha = _crack(size, rng)
        target = np.zeros_like(image, dtype=np.float32) + rng.uniform(200, 255)
    else:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS}")
    weight = (alpha.astype(np.float32) / 255.0)[..., None]
    out = image.astype(np.float32) * (1 - weight) + target * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha > 127


def defect_batch(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One defect per image of a uint8 [N,S,S,3] batch; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    pairs = [add_defect(img, rng) for img in images]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

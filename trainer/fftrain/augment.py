"""Photometric and small geometric augmentation of normal images, for exposure robustness.

A line's good parts are photographed under exposure settings that drift (lamps age,
gain is re-tuned, parts reflect differently). A flow fitted on one exposure reads a
brighter or darker good part as unlike anything it has seen. Training on re-exposed
views of the normal images (gain, gamma, offset, sensor noise, a few pixels of shift)
teaches the flows that these changes are normal, while real defects (local changes of
structure) stay unlike the training data.

The backbone is frozen, so augmented views are drawn once per image and their features
cached with the originals (``views`` per image): training then samples from that fixed
pool. That is exact for the views drawn, and a documented approximation of drawing new
views every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PhotometricRange:
    gain: tuple[float, float] = (0.75, 1.3)
    gamma: tuple[float, float] = (0.75, 1.35)
    offset: tuple[float, float] = (-20.0, 20.0)
    noise_sigma: tuple[float, float] = (0.0, 4.0)
    shift_fraction: float = 0.03


def augmented_view(image: np.ndarray, rng: np.random.Generator, r: PhotometricRange = PhotometricRange()) -> np.ndarray:
    """One re-exposed, slightly shifted copy of a uint8 HxWx3 image (same size)."""
    x = image.astype(np.float32) / 255.0
    gain, gamma = rng.uniform(*r.gain), rng.uniform(*r.gamma)
    y = 255.0 * gain * np.power(x, gamma) + rng.uniform(*r.offset)
    y = y + rng.normal(0.0, rng.uniform(*r.noise_sigma), y.shape[:2])[..., None]
    h, w = image.shape[:2]
    if r.shift_fraction > 0:
        dx, dy = rng.uniform(-r.shift_fraction, r.shift_fraction, 2) * (w, h)
        y = cv2.warpAffine(y, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), borderMode=cv2.BORDER_REFLECT)
        y = y.reshape(image.shape)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def augmented_views(images: np.ndarray, views: int, seed: int) -> np.ndarray:
    """``views`` augmented copies of every image of a uint8 [N,H,W,3] batch: [N*views,H,W,3]."""
    rng = np.random.default_rng(seed)
    return np.stack([augmented_view(img, rng) for _ in range(views) for img in images])

"""Photometric, small geometric and codec augmentation of normal images, for robustness.

A line's good parts are photographed under exposure settings that drift (lamps age,
gain is re-tuned, parts reflect differently). A flow fitted on one exposure reads a
brighter or darker good part as unlike anything it has seen. Training on re-exposed
views of the normal images (gain, gamma, offset, sensor noise, a few pixels of shift)
teaches the flows that these changes are normal, while real defects (local changes of
structure) stay unlike the training data.

Optionally a share of the views also pass through a JPEG round trip: a camera's MJPEG stream
or a line PC saving JPEG smooths texture and adds block edges, which a model fitted on
lossless images reads as defects. It is off by default because it teaches the flows that a
local loss of fine detail is normal, and some defects (smudges, blur-like texture changes)
are exactly that; benchmarks/README.md has the measured trade.

The backbone is frozen, so augmented views are drawn once per image and their features
cached with the originals (``views`` per image): training then samples from that fixed
pool. That is exact for the views drawn, and a documented approximation of drawing new
views every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .data import is_grey


@dataclass(frozen=True)
class PhotometricRange:
    gain: tuple[float, float] = (0.75, 1.3)
    gamma: tuple[float, float] = (0.75, 1.35)
    offset: tuple[float, float] = (-20.0, 20.0)
    noise_sigma: tuple[float, float] = (0.0, 4.0)
    shift_fraction: float = 0.03
    # Lossy compression, as a camera's MJPEG stream or a line PC saving JPEG applies it:
    # the share of views that pass through a JPEG round trip, and its quality range.
    jpeg_probability: float = 0.0
    jpeg_quality: tuple[int, int] = (50, 95)


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
    out = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    # Both drawn for every view, so the other views do not change with the probability.
    coded, quality = rng.uniform() < r.jpeg_probability, int(rng.integers(r.jpeg_quality[0], r.jpeg_quality[1] + 1))
    return jpeg_round_trip(out, quality) if coded else out


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """A uint8 HxWx3 RGB image through JPEG at ``quality`` (libjpeg, 4:2:0 chroma). A grey
    image is coded as one channel, as a monochrome camera's stream is, so it stays grey."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    if is_grey(image):
        ok, data = cv2.imencode(".jpg", image[..., 0], params)
        decoded = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        return np.repeat(decoded[..., None], 3, axis=2)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def augmented_views(images: np.ndarray, views: int, seed: int, r: PhotometricRange = PhotometricRange()) -> np.ndarray:
    """``views`` augmented copies of every image of a uint8 [N,H,W,3] batch: [N*views,H,W,3]."""
    rng = np.random.default_rng(seed)
    return np.stack([augmented_view(img, rng, r) for _ in range(views) for img in images])

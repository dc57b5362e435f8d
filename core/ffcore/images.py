"""Reading images and ground-truth masks, and the resize the model input gets.

numpy + OpenCV only. ``np.fromfile`` + ``cv2.imdecode`` so non-ASCII paths work.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class DataError(ValueError):
    """A data folder, spec or file cannot be used; the message says why and what to do."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB HxWx3 (gray files become 3 equal channels)."""
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode: non-ASCII paths work
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    if bgr is None:
        raise DataError(f"{path}: not a decodable image (corrupt or empty file); remove it from the folder")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def letterbox_geometry(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where a height x width frame lands inside the model input when its aspect ratio is
    kept: (top, left, resized height, resized width), centred, the rest padded with 0.
    ffrt.preprocess uses this same function (tests/export/test_nonsquare.py holds the bytes equal)."""
    mh, mw = size
    scale = min(mh / height, mw / width)
    nh, nw = max(1, min(mh, round(height * scale))), max(1, min(mw, round(width * scale)))
    return (mh - nh) // 2, (mw - nw) // 2, nh, nw


def resize_to_model(image: np.ndarray, size: int | tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """The resize the runtime applies too (ffrt.preprocess, recorded in the metadata as
    'area' + the resize mode): INTER_AREA, which averages rather than aliases when
    shrinking. ``size`` is a square side or (height, width)."""
    h, w = (size, size) if isinstance(size, int) else size
    if mode == "stretch":
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if mode != "letterbox":
        raise ValueError(f"unknown resize mode {mode!r}; choose stretch or letterbox")
    top, left, nh, nw = letterbox_geometry(image.shape[0], image.shape[1], (h, w))
    out = np.zeros((h, w) + image.shape[2:], dtype=image.dtype)
    out[top : top + nh, left : left + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA).reshape(
        (nh, nw) + image.shape[2:]
    )
    return out


def read_mask(path: Path | None, size: int | tuple[int, int]) -> np.ndarray:
    """Ground-truth mask as bool, resized (nearest) to ``size`` (square side or (h, w));
    no file means a defect-free image."""
    h, w = (size, size) if isinstance(size, int) else size
    if path is None:
        return np.zeros((h, w), dtype=bool)
    mask = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DataError(f"{path}: not a decodable mask image")
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST) > 127


def image_shape(path: Path) -> tuple[int, int]:
    """(height, width) of an image file (decoded: OpenCV has no header-only reader)."""
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise DataError(f"{path}: not a decodable image (corrupt or empty file); remove it from the folder")
    return int(img.shape[0]), int(img.shape[1])

"""A picture a person can judge: heatmap over the part, defect mask outlined.

Used by ``ffrt detect --overlays`` and the demo to write PNGs. Not on the inspection
path; nothing here affects scores or decisions.
"""

from __future__ import annotations

import cv2
import numpy as np

from .errors import FFRTError, InvalidImageError

HEATMAP_WEIGHT = 0.45  # enough colour to read the map, enough image to see the part
OUTLINE_BGR = (255, 255, 255)  # white: visible on every JET colour, unlike red on red
PASS_BGR = (80, 200, 80)
FAIL_BGR = (60, 60, 230)


def render_overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray,
    vmin: float | None = None,
    vmax: float | None = None,
    score: float | None = None,
    is_anomalous: bool | None = None,
) -> np.ndarray:
    """Blend a JET heatmap of ``anomaly_map`` over ``image`` and outline ``mask``.

    image:        uint8 BGR HxWx3 or gray HxW / HxWx1 (the frame the map belongs to).
    anomaly_map:  float HxW; resized (bilinear) to the image if its size differs.
    mask:         bool HxW; resized (nearest) likewise. Its outline is drawn in white.
    vmin, vmax:   map values shown as the coldest / hottest colour. Default: this map's
                  min and max, which makes every image look "hot" somewhere; pass fixed
                  values (e.g. the pixel threshold and a high score) to compare images.
    score, is_anomalous: when given, written in the top-left corner ("FAIL 3.21").
    Returns a new uint8 BGR HxWx3 image.
    """
    base = _as_bgr(image)
    h, w = base.shape[:2]
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim == 3 and amap.shape[0] == 1:
        amap = amap[0]
    if amap.ndim != 2 or amap.size == 0:
        raise InvalidImageError(f"anomaly_map must be a 2-D HxW array, not shape {amap.shape}.")
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2 or mask.size == 0:
        raise InvalidImageError(f"mask must be a 2-D HxW array, not shape {mask.shape}.")
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    mask_u8 = mask.astype(np.uint8)
    if mask_u8.shape != (h, w):
        mask_u8 = cv2.resize(mask_u8, (w, h), interpolation=cv2.INTER_NEAREST)

    finite = amap[np.isfinite(amap)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    # NaN pixels shown hottest: the detector counts them as defective too.
    amap = np.nan_to_num(amap, nan=hi, posinf=hi, neginf=lo)
    scaled = (amap - lo) / (hi - lo) if hi > lo else np.zeros_like(amap)
    heat = cv2.applyColorMap(np.clip(scaled * 255.0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(base, 1.0 - HEATMAP_WEIGHT, heat, HEATMAP_WEIGHT, 0.0)

    contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(min(h, w) / 200))
    cv2.drawContours(out, contours, -1, OUTLINE_BGR, thickness)

    if score is not None:
        verdict = "" if is_anomalous is None else ("FAIL " if is_anomalous else "PASS ")
        colour = OUTLINE_BGR if is_anomalous is None else (FAIL_BGR if is_anomalous else PASS_BGR)
        _label(out, f"{verdict}{score:.4g}", colour)
    return out


def overlay_png(image: np.ndarray, result) -> bytes:
    """The PNG bytes of ``render_overlay`` for a Detector ``Result`` on ``image``, with
    the verdict and score in the corner."""
    png = render_overlay(image, result.anomaly_map, result.mask, score=result.score, is_anomalous=result.is_anomalous)
    return encode_png(png, "the overlay")


def encode_png(image: np.ndarray, what: str) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise FFRTError(f"could not encode {what} as PNG")
    return data.tobytes()


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidImageError(f"render_overlay needs a non-empty uint8 image (BGR or gray), not a {what}.")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise InvalidImageError(f"render_overlay needs HxW, HxWx1 or HxWx3 uint8, not shape {image.shape}.")


def _label(img: np.ndarray, text: str, colour: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    scale = max(0.4, min(h, w) / 500)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, th // 3)
    # Dark box behind the text: readable on any heatmap colour.
    cv2.rectangle(img, (0, 0), (min(w - 1, tw + 2 * pad), min(h - 1, th + base + 2 * pad)), (0, 0, 0), -1)
    cv2.putText(img, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)

"""The pictures a review page embeds: each chosen part as the model saw it, its anomaly map
with the predicted mask (and the ground truth, where known) outlined, and a few maps at
full precision for the pixel-threshold slider.

A page shows at most a few hundred parts, so pictures go to the parts nearest the stored
image threshold: those are the ones a slider move flips first.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffcore.images import resize_to_model

from ..overlay import render_overlay
from ..preprocess import read_image_file

GROUND_TRUTH_BGR = (60, 220, 60)  # green: apart from the white predicted outline and from JET's reds
JPEG_QUALITY = 85
DEFAULT_PICTURES = 240
DEFAULT_PIXEL_EXAMPLES = 6
_BATCH = 8


@dataclass(frozen=True)
class Picture:
    image: str  # data: URI (JPEG) of the frame at the model's input size
    overlay: str  # data: URI (JPEG): heat map, predicted mask white, ground truth green


@dataclass(frozen=True)
class PixelExample:
    name: str
    image: str  # data: URI (JPEG)
    map: str  # data: URI (PNG, gray): the anomaly map quantized to 0..255 over [lo, hi]
    lo: float
    hi: float


@dataclass(frozen=True)
class Pictures:
    by_part: dict[int, Picture]
    pixel_examples: list[PixelExample]
    map_range: tuple[float, float]  # the colour scale shared by every picture, and the pixel slider's range
    ground_truth: bool = False  # some picture has a ground-truth outline


def choose_pictured(scores: np.ndarray, stored_threshold: float, limit: int) -> list[int]:
    """Indices of up to ``limit`` parts, nearest the stored image threshold first."""
    distance = np.abs(np.asarray(scores, np.float64) - stored_threshold)
    return [int(i) for i in np.argsort(distance, kind="stable")[:max(0, limit)]]


def data_uri(image: np.ndarray, fmt: str = ".jpg") -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, image, params)
    if not ok:
        raise ValueError(f"could not encode a {image.shape} picture as {fmt}")
    mime = "image/jpeg" if fmt == ".jpg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.tobytes()).decode('ascii')}"


def render_pictures(
    detector, paths: Sequence[str], chosen: Sequence[int], scores: Sequence[float],
    ground_truth: Callable[[int], np.ndarray | None] = lambda i: None,
    pixel_examples: int = DEFAULT_PIXEL_EXAMPLES, progress: Callable[[str], None] = lambda s: None,
    pixel_threshold: float | None = None,
) -> Pictures:
    """Pictures of ``paths[i]`` for every i in ``chosen``, through ``detector``; the predicted
    mask is ``map > pixel_threshold`` (default: the detector's); ``ground_truth(i)``: the
    part's mask at the model input size, or None."""
    h, w = detector.input_size
    mode = detector.meta.input.resize_mode
    pixel_t = detector.thresholds.pixel if pixel_threshold is None else float(pixel_threshold)
    frames, maps, masks = [], [], []
    for start in range(0, len(chosen), _BATCH):
        batch = [resize_to_model(read_image_file(paths[i]), (h, w), mode) for i in chosen[start:start + _BATCH]]
        inputs = batch if detector.color_order == "BGR" else [cv2.cvtColor(b, cv2.COLOR_BGR2RGB) for b in batch]
        for frame, r in zip(batch, detector.predict_batch(inputs, batch_size=len(inputs))):
            frames.append(frame)
            maps.append(np.asarray(r.anomaly_map, np.float32))
            masks.append(~(maps[-1] <= pixel_t))  # NaN counts as defective, as in the runtime
        if start // _BATCH % 10 == 0 or start + _BATCH >= len(chosen):  # a line every 80 pictures, for logs
            progress(f"  pictures {min(start + _BATCH, len(chosen))}/{len(chosen)}")
    # One colour scale for every picture, so pictures compare: from half the pixel threshold
    # to the hottest pixel shown.
    hi = max([float(np.nanmax(m)) for m in maps] + [pixel_t * 1.5])
    lo = min([float(np.nanpercentile(m, 1)) for m in maps] + [pixel_t * 0.5])
    hi = hi if hi > lo else lo + 1.0
    by_part, any_truth = {}, False
    for i, frame, amap, mask in zip(chosen, frames, maps, masks):
        overlay = render_overlay(frame, amap, mask, vmin=lo, vmax=hi)
        gt = ground_truth(i)
        if gt is not None and gt.any():
            contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(overlay, contours, -1, GROUND_TRUTH_BGR, 1)
            any_truth = True
        by_part[i] = Picture(image=data_uri(frame), overlay=data_uri(overlay))
    top = sorted(range(len(chosen)), key=lambda k: -scores[chosen[k]])[:pixel_examples]
    examples = []
    for k in top:
        scaled = np.clip((np.nan_to_num(maps[k], nan=hi) - lo) / (hi - lo) * 255.0, 0, 255).round().astype(np.uint8)
        examples.append(PixelExample(name="/".join(Path(paths[chosen[k]]).parts[-2:]),
                                     image=data_uri(frames[k]), map=data_uri(scaled, ".png"), lo=lo, hi=hi))
    return Pictures(by_part, examples, (lo, hi), any_truth)

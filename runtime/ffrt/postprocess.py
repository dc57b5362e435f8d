"""The model's outputs -> the verdict on one image: the map back in the frame's geometry,
the pixel and image thresholds applied, the defect regions in the frame's coordinates.

One definition, used by the Detector (direct calls and the batching pipeline of
``Detector.submit``) and by ffbench's postprocess stage (so the stage it times is the
Detector's own code). :class:`Postprocessor` holds only immutable settings, so the
pipeline's worker threads share it without a reference to the Detector.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from .meta import InputSpec, Thresholds
from .preprocess import frame_region, letterbox_geometry
from .regions import Region, find_regions
from .result import LatencySplit, Result, normalize_score

log = logging.getLogger("ffrt")


def postprocess(
    amap: np.ndarray, score: float, original: tuple[int, int], spec: InputSpec, thresholds: Thresholds,
    resize_outputs: bool = True,
) -> tuple[float, bool, np.ndarray, np.ndarray]:
    """(score, is_anomalous, anomaly map, mask) of one image from its model-size map.

    ``original``: the frame's (height, width). With ``resize_outputs`` the map is cropped
    to the frame's part of the input (letterbox padding off) and resized bilinearly to the
    frame's size; otherwise it stays at the model size. The returned map owns its data.
    """
    if resize_outputs:
        # Letterboxed: the padding is not part of the frame; crop it off, then resize.
        amap = frame_region(amap, original, spec)
    if resize_outputs and original != amap.shape:
        amap = cv2.resize(amap, (original[1], original[0]), interpolation=cv2.INTER_LINEAR)
    else:
        amap = amap.copy()  # own the data: a view would pin the whole batch in memory
    # "not <=" rather than ">": NaN (e.g. overflow in the model) fails the part. In place
    # into one bool array: at full size on a large frame, a temporary per step adds up.
    mask = np.less_equal(amap, thresholds.pixel)
    np.logical_not(mask, out=mask)
    is_anomalous = not (score <= thresholds.image)
    if math.isnan(score):
        log.warning("ffrt: the model returned a NaN score; the image is reported as anomalous")
    return score, is_anomalous, amap, mask


class Outputs(NamedTuple):
    score: float
    is_anomalous: bool
    anomaly_map: np.ndarray
    mask: np.ndarray
    regions: tuple[Region, ...]


@dataclass(frozen=True)
class Postprocessor:
    spec: InputSpec
    resize_outputs: bool
    norm_scale: float | None  # score_stats.std when usable, else None (no normalized score)
    min_region_px: int
    backend: str
    precision: str

    def outputs(self, amap: np.ndarray, score: float, original: tuple[int, int], thresholds: Thresholds) -> Outputs:
        """``amap``: the model-size map of one image; ``original``: its (height, width)."""
        score, is_anomalous, amap, mask = postprocess(amap, score, original, self.spec, thresholds, self.resize_outputs)
        return Outputs(score, is_anomalous, amap, mask, self._regions(amap, mask, original))

    def _regions(self, amap: np.ndarray, mask: np.ndarray, original: tuple[int, int]) -> tuple[Region, ...]:
        if mask.shape == original:  # the map is at frame size (or the frame is at model size)
            return find_regions(mask, amap, min_region_px=self.min_region_px)
        content = None
        if self.spec.resize_mode == "letterbox":
            content = letterbox_geometry(original[0], original[1], self.spec)
        return find_regions(mask, amap, min_region_px=self.min_region_px, frame_size=original, content=content)

    def result(self, out: Outputs, thresholds: Thresholds, latency_ms: float, split: LatencySplit) -> Result:
        scale = self.norm_scale
        return Result(
            score=out.score, is_anomalous=out.is_anomalous, anomaly_map=out.anomaly_map, mask=out.mask,
            latency_ms=latency_ms,
            normalized_score=None if scale is None else normalize_score(out.score, thresholds.image, scale),
            regions=out.regions, latency_split=split, backend=self.backend, precision=self.precision,
        )

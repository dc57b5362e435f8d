"""Backend outputs of one image -> the parts of its :class:`~ffrt.result.Result`.

One place for what a direct call and the batching pipeline both do after inference:
apply the thresholds, bring the map to the frame (or not), find the defect regions in the
frame's coordinates. Holds only immutable settings, so the pipeline's worker threads can
share it without a reference to the Detector.
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
        if self.resize_outputs:
            # Letterboxed: the padding is not part of the frame; crop it off, then resize.
            amap = frame_region(amap, original, self.spec)
        if self.resize_outputs and original != amap.shape:
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

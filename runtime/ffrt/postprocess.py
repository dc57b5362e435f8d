"""The model's outputs -> the verdict on one image: the map back in the frame's geometry,
the pixel and image thresholds applied, the defect regions in the frame's coordinates.

The "finish" stage of ``ffrt.stages``. :class:`Postprocessor` holds only immutable
settings, so the batching pipeline's worker threads share it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ffcore.geometry import FrameGeometry

from .meta import Thresholds
from .regions import Region, find_regions
from .result import LatencySplit, Result, normalize_score

log = logging.getLogger("ffrt")


def decide(amap: np.ndarray, score: float, thresholds: Thresholds) -> tuple[bool, np.ndarray]:
    """(is_anomalous, mask) of one image: its score against the image threshold, each map
    pixel against the pixel threshold."""
    # "not <=" rather than ">": NaN (e.g. overflow in the model) fails the part. In place
    # into one bool array: at full size on a large frame, a temporary per step adds up.
    mask = np.less_equal(amap, thresholds.pixel)
    np.logical_not(mask, out=mask)
    if math.isnan(score):
        log.warning("ffrt: the model returned a NaN score; the image is reported as anomalous")
    return not (score <= thresholds.image), mask


class Outputs(NamedTuple):
    score: float
    is_anomalous: bool
    anomaly_map: np.ndarray
    mask: np.ndarray
    regions: tuple[Region, ...]


#: ``resize_outputs`` value: frame-size outputs only for images that need them (see Postprocessor).
FLAGGED = "flagged"


def mask_is_empty_at_any_size(content: np.ndarray, pixel_threshold: float) -> bool:
    """Whether no pixel of the map's content, nor of any bilinear resize of it, is above the
    pixel threshold: a bilinear value is a weighted mean of its neighbours, never above their
    largest. A NaN is never "empty" (NaN pixels are in the mask). The margin covers float
    rounding in the resize's weights."""
    peak = float(content.max(initial=-np.inf))
    return peak <= pixel_threshold - 1e-6 * max(1.0, abs(pixel_threshold))


@dataclass(frozen=True)
class Postprocessor:
    #: True: maps and masks at the frame's size; False: at the model size. FLAGGED: at the
    #: frame's size for an image that fails or has a pixel above the pixel threshold, at the
    #: model size for the others, whose mask is empty and regions none at either size (ffrt run:
    #: it writes maps only of rejected frames, and the resize to a megapixel frame and the
    #: region search over it cost more CPU than decoding it at a reduced size).
    resize_outputs: bool | str
    norm_scale: float | None  # score_stats.std when usable, else None (no normalized score)
    min_region_px: int
    backend: str
    precision: str

    def outputs(self, amap: np.ndarray, score: float, geometry: FrameGeometry, thresholds: Thresholds) -> Outputs:
        """``amap``: the model-size map of one image; ``geometry``: its frame's (computed
        once, when it was prepared). At the frame's size (``resize_outputs``) the map is cropped
        to the frame's part of the input (letterbox padding off) and resized bilinearly to the
        frame's size; otherwise it stays at the model size. The returned map owns its data."""
        if self.resize_outputs == FLAGGED:
            at_frame = not (score <= thresholds.image) or not mask_is_empty_at_any_size(geometry.crop(amap),
                                                                                       thresholds.pixel)
        else:
            at_frame = bool(self.resize_outputs)
        amap = geometry.to_frame(amap) if at_frame else amap.copy()
        is_anomalous, mask = decide(amap, score, thresholds)
        return Outputs(score, is_anomalous, amap, mask, self._regions(amap, mask, geometry))

    def _regions(self, amap: np.ndarray, mask: np.ndarray, geometry: FrameGeometry) -> tuple[Region, ...]:
        if mask.shape == geometry.frame_size:  # the map is at frame size (or the frame is at model size)
            return find_regions(mask, amap, min_region_px=self.min_region_px)
        return find_regions(mask, amap, min_region_px=self.min_region_px, frame_size=geometry.frame_size,
                            content=geometry.content if geometry.padded else None)

    def result(self, out: Outputs, thresholds: Thresholds, latency_ms: float, split: LatencySplit) -> Result:
        scale = self.norm_scale
        return Result(
            score=out.score, is_anomalous=out.is_anomalous, anomaly_map=out.anomaly_map, mask=out.mask,
            latency_ms=latency_ms,
            normalized_score=None if scale is None else normalize_score(out.score, thresholds.image, scale),
            regions=out.regions, latency_split=split, backend=self.backend, precision=self.precision,
        )

"""Defect regions: the connected components of a defect mask, in the frame's own pixels.

An operator (or the line's sorter) needs to know *where* a defect is and how big it is,
not only that the part failed. ``find_regions`` turns a mask into a list of
:class:`Region`, largest first:

- 8-connectivity (``cv2.connectedComponentsWithStats``): a diagonal crack is one region,
  not a staircase of single pixels.
- Coordinates are the frame's, whatever size the map was returned at: when the map is at
  the model size (``Detector(resize_outputs=False)``) the components are found there and
  scaled to the frame, undoing the stretch or the letterbox (the padding is cut off first,
  so no region lies in it). Areas are then scaled counts (the model-size pixel count times
  the frame pixels one model pixel covers) and bounding boxes cover every frame pixel the
  component's model pixels touch; at frame size everything is exact.
- Deterministic: ties in area are broken by the region's first pixel in raster order (top
  row first, then left to right), never by the labelling algorithm's numbering.
- ``min_region_px`` drops regions whose (frame) area is below it. It filters the *list of
  regions* only; it does not change the mask or the part's verdict (see ``ffrt.result``
  for why the verdict stays the calibrated score decision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InvalidArgumentError


@dataclass(frozen=True)
class Region:
    """One connected defect region, in the frame's pixel coordinates.

    area_px:    pixels in the region (at model size: the scaled count, at least 1).
    bbox:       (x, y, width, height): left column, top row and size of the smallest box
                holding the region.
    centroid:   (x, y) mean position of its pixels; pixel centres are at integer
                coordinates, so a single pixel at column 3, row 5 has centroid (3.0, 5.0).
    peak_score: the largest anomaly-map value inside the region, in map units. NaN when
                the map is NaN there (a numerical overflow: such pixels are in the mask).
    """

    area_px: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    peak_score: float

    def to_dict(self) -> dict:
        """JSON-ready: lists for the tuples, None for a NaN peak (JSON has no NaN)."""
        return {
            "area_px": self.area_px,
            "bbox": list(self.bbox),
            "centroid": [round(self.centroid[0], 3), round(self.centroid[1], 3)],
            "peak_score": self.peak_score if math.isfinite(self.peak_score) else None,
        }


def check_min_region_px(value: object) -> int:
    """``min_region_px`` as an int, or InvalidArgumentError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidArgumentError(
            f"min_region_px must be an integer >= 0 (0 keeps every region), not {value!r}."
        )
    return int(value)


def find_regions(
    mask: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    min_region_px: int = 0,
    frame_size: tuple[int, int] | None = None,
    content: tuple[int, int, int, int] | None = None,
) -> tuple[Region, ...]:
    """The connected components of ``mask`` (8-connectivity), largest first.

    mask, anomaly_map: 2-D, same shape; the peak score of a region is read from the map.
    frame_size:  (height, width) of the frame the coordinates are reported in; None = the
                 mask's own size (the map is at frame size).
    content:     (top, left, height, width) of the part of the mask that shows the frame
                 (a letterboxed model-size map: ``preprocess.letterbox_geometry``); None =
                 all of it. Pixels outside it are ignored.
    min_region_px: regions with ``area_px`` below this are left out.
    """
    min_region_px = check_min_region_px(min_region_px)
    if mask.ndim != 2 or mask.shape != anomaly_map.shape[:2]:
        raise InvalidArgumentError(
            f"find_regions needs a 2-D mask and a map of the same size; got {mask.shape} and {anomaly_map.shape}."
        )
    if content is not None:
        top, left, ch, cw = content
        mask = mask[top : top + ch, left : left + cw]
        anomaly_map = anomaly_map[top : top + ch, left : left + cw]
    if not mask.any():
        return ()
    mh, mw = mask.shape
    fh, fw = (mh, mw) if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
    sy, sx = fh / mh, fw / mw
    exact = sy == 1.0 and sx == 1.0

    n, labels, stats, centroids = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask, dtype=np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    # Peak value and first raster pixel per label in one pass over the mask pixels:
    # flatnonzero is in raster order, and a stable sort by label keeps that order inside
    # each label, so each group's first element is the region's first pixel.
    flat = np.flatnonzero(mask)
    labs = labels.ravel()[flat]
    order = np.argsort(labs, kind="stable")
    labs_sorted = labs[order]
    starts = np.flatnonzero(np.r_[True, labs_sorted[1:] != labs_sorted[:-1]])
    # np.maximum propagates NaN: a region holding a NaN pixel reports a NaN peak.
    peaks = np.maximum.reduceat(anomaly_map.ravel()[flat][order].astype(np.float64), starts)
    first_pixel = flat[order[starts]]
    group_labels = labs_sorted[starts]  # 1..n-1 (label 0, the background, is not in the mask)

    counts = stats[group_labels, cv2.CC_STAT_AREA]
    ranking = np.lexsort((first_pixel, -counts))  # largest count first, then raster order
    regions = []
    for g in ranking:
        label = group_labels[g]
        count = int(counts[g])
        area = count if exact else max(1, round(count * sy * sx))
        if area < min_region_px:
            continue  # sorted by count, but scaled areas may round equal: keep scanning
        x, y, w, h = (int(v) for v in stats[label, :4])
        cx, cy = (float(v) for v in centroids[label])
        if not exact:
            # A model pixel i covers frame [i*s, (i+1)*s); its centre i+0.5 maps to
            # (i+0.5)*s, which is pixel index (i+0.5)*s - 0.5 in the frame's convention.
            x0, x1 = math.floor(x * sx), min(fw, math.ceil((x + w) * sx))
            y0, y1 = math.floor(y * sy), min(fh, math.ceil((y + h) * sy))
            x, y, w, h = x0, y0, max(1, x1 - x0), max(1, y1 - y0)
            cx, cy = (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
        regions.append(Region(area_px=area, bbox=(x, y, w, h), centroid=(cx, cy), peak_score=float(peaks[g])))
    return tuple(regions)

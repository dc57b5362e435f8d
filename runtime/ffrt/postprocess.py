"""The model's outputs -> the verdict on one image: the map back in the frame's geometry,
the pixel and image thresholds applied.

One definition, used by the Detector and by ffbench's postprocess stage (so the stage
it times is the Detector's own code).
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from .meta import InputSpec, Thresholds
from .preprocess import frame_region

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

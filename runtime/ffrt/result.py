"""``Result``: the verdict on one image, and the operator-facing normalized score.

Its own module so that code which only consumes results (reports, line runtimes, servers)
need not import the Detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, repr=False)
class Result:
    """The verdict on one image.

    score:        higher = more anomalous, in the units of the model's metadata.
    is_anomalous: score > image threshold. A NaN score (numerical overflow in the model)
                  also counts as anomalous: a broken measurement must never pass a part.
    anomaly_map:  float32 HxW; at the original image size when the Detector was made with
                  resize_outputs=True (bilinear, cv2.INTER_LINEAR), else at the model size.
    mask:         bool HxW, anomaly_map > pixel threshold, on the map returned here (so it
                  has the map's size). NaN pixels are in the mask, for the same reason.
    latency_ms:   end-to-end wall time of the call that produced this result (preprocess +
                  inference + postprocess). All results of one predict_batch call share it:
                  it is the time of the whole call, not a per-image share.
    normalized_score: optional 0-1 score for operators' displays, None when the model's
                  metadata has no usable ``score_stats`` (std > 0). See :func:`normalize_score`:
                  1 / (1 + exp(-(score - image_threshold) / score_stats.std)), so 0.5 is
                  exactly the (current) image threshold, > 0.5 means rejected, and one
                  standard deviation of normal scores moves it by about 0.23 near the
                  threshold. A NaN score gives 1.0 (a broken measurement reads "anomalous").
    precision:    the precision the backend computed this result in ("fp32", "bf16", "fp16",
                  "int8", "int8+bf16"; Detector.precision, with precision_detail saying which
                  parts ran in which): BF16 and INT8 scores differ from FP32 ones.
    """

    score: float
    is_anomalous: bool
    anomaly_map: np.ndarray = field(compare=False)
    mask: np.ndarray = field(compare=False)
    latency_ms: float
    normalized_score: float | None = None
    precision: str = "fp32"

    def __repr__(self) -> str:
        h, w = self.anomaly_map.shape[:2]
        return (
            f"Result(score={self.score:.6g}, is_anomalous={self.is_anomalous}, "
            f"anomaly_map=float32[{h}x{w}], mask=bool[{h}x{w}] ({int(self.mask.sum())} px), "
            f"latency_ms={self.latency_ms:.2f}, precision={self.precision!r})"
        )


def normalize_score(score: float, image_threshold: float, scale: float) -> float:
    """Operator-facing 0-1 score: logistic of the distance to the image threshold, in units
    of the normal scores' standard deviation (``score_stats.std`` from the metadata).

        normalized = 1 / (1 + exp(-(score - image_threshold) / scale))

    0.5 = at the threshold, monotonic in ``score`` (same ranking, same decisions: > 0.5 iff
    score > threshold). NaN -> 1.0, consistent with NaN counting as anomalous.
    """
    if math.isnan(score):
        return 1.0
    z = (score - image_threshold) / scale
    if z < -700.0:  # exp overflow guard; the value is 0 to double precision anyway
        return 0.0
    return 1.0 / (1.0 + math.exp(-z)) if z < 700.0 else 1.0

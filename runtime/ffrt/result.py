"""``Result``: the verdict on one image, and the operator-facing normalized score.

Its own module so that code which only consumes results (reports, line runtimes, servers)
need not import the Detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .regions import Region


@dataclass(frozen=True)
class LatencySplit:
    """Where one result's time went, in milliseconds; the four add up to its ``latency_ms``.

    queue_ms:       waiting: in the submit queue, for its batch to fill or for the backend
                    to be free (0 for direct calls, whose lock wait counts as inference).
    preprocess_ms:  decode, validate, resize, colour.
    inference_ms:   the backend call of its batch (shared by the batch).
    postprocess_ms: thresholds, map resize, regions.
    Direct calls (``det(image)``, ``predict_batch``) time the whole call's stages, shared by
    its results; ``Detector.submit`` times each image's own preprocess and postprocess.
    """

    queue_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


@dataclass(frozen=True, repr=False)
class Result:
    """The verdict on one image.

    score:        higher = more anomalous, in the units of the model's metadata.
    is_anomalous: score > image threshold. A NaN score (numerical overflow in the model)
                  also counts as anomalous: a broken measurement must never pass a part.
    anomaly_map:  float32 HxW; at the original image size when the Detector was made with
                  resize_outputs=True (bilinear, cv2.INTER_LINEAR), else at the model size
                  ("flagged": at the original size only for a failed image or one with a
                  pixel above the pixel threshold).
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
    regions:      the connected components of ``mask`` (8-connected), largest first, in the
                  frame's own pixel coordinates even when the map is at the model size; see
                  :class:`~ffrt.regions.Region`. Empty when the mask is empty. Regions below
                  the Detector's ``min_region_px`` are left out of this list, and only of it:
                  ``is_anomalous`` stays the calibrated score decision. The thresholds were
                  set to a false-reject rate on the score, and the pixel threshold on each
                  normal image's *peak* map value, so a marginal real defect often shows as
                  a few mask pixels: letting small regions overrule the score would pass
                  exactly those parts, and no calibration would have measured that rule.
                  Line software that wants a region rule adds it explicitly, e.g.
                  ``reject = r.is_anomalous and bool(r.regions)``.
    latency_split: the stages of ``latency_ms`` (:class:`LatencySplit`).
    backend, precision: the backend that scored the image and the precision it computed in
                  (Detector.precision: the file's encoding on ONNX Runtime and TensorRT, "bf16" /
                  "int8+bf16" where OpenVINO ran BF16; precision_detail says which parts).
                  From a RemoteDetector: what the server says ran its graph, and its
                  latency_split is the server's stages with the rest of the round trip (queues,
                  network) as queue_ms; None for a server that does not report them.
    """

    score: float
    is_anomalous: bool
    anomaly_map: np.ndarray = field(compare=False)
    mask: np.ndarray = field(compare=False)
    latency_ms: float
    normalized_score: float | None = None
    regions: tuple[Region, ...] = ()
    latency_split: LatencySplit | None = None
    backend: str | None = None
    precision: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary without the arrays: score, normalized score, verdict, regions,
        latency and its split, backend and precision (when known). NaN becomes None."""
        d = {
            "score": json_float(self.score),
            "normalized_score": self.normalized_score,
            "is_anomalous": bool(self.is_anomalous),
            "regions": [r.to_dict() for r in self.regions],
            "latency_ms": round(self.latency_ms, 4),
        }
        if self.latency_split is not None:
            d.update(self.latency_split.to_dict())
        if self.backend is not None:
            d["backend"] = self.backend
        if self.precision is not None:
            d["precision"] = self.precision
        return d

    def __repr__(self) -> str:
        h, w = self.anomaly_map.shape[:2]
        return (
            f"Result(score={self.score:.6g}, is_anomalous={self.is_anomalous}, "
            f"anomaly_map=float32[{h}x{w}], mask=bool[{h}x{w}] ({int(self.mask.sum())} px), "
            f"{len(self.regions)} region(s), latency_ms={self.latency_ms:.2f})"
        )


def json_float(x: float) -> float | None:
    """JSON has no NaN/inf: None says "no valid score"."""
    return float(x) if math.isfinite(x) else None


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

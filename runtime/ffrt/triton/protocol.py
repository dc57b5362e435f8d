"""The wire contract of ``ffrt_detector``: tensor names, types, and Result <-> tensors.

One module, read by the three parties that must agree on it: the model repository writer
(config.pbtxt), the Triton Python-backend model that answers (``python_model``) and the
client (``ffrt.client.RemoteDetector``). Triton's model configuration, for a model with
``max_batch_size > 0``, lists each tensor's dims *without* the batch dimension, and every
request and response tensor carries it in front: one image per request, so each tensor
here travels as ``[1, *dims]``.

Inputs (send exactly one):
    image_bytes  BYTES [1]          an encoded image file (PNG, JPEG, BMP, TIFF, WebP, ...)
    image        UINT8 [H, W, C]    raw pixels, C = 1 (gray) or 3 (BGR, OpenCV's order)
Outputs (as ``ffrt.Result``):
    score            FP64 [1]       higher = more anomalous (the graph's float32 value, exact)
    is_anomalous     BOOL [1]       score > image threshold (NaN counts as anomalous)
    normalized_score FP64 [1]       0-1, 0.5 = at the threshold; NaN when the model has no score stats
    anomaly_map      FP32 [H, W]    at the image's own size
    mask             BOOL [H, W]    anomaly_map > pixel threshold
    regions          FP64 [R, 8]    one row per defect region, largest first:
                                    area_px, x, y, w, h, centroid x, centroid y, peak score
Outputs that say how it was computed (servers written by ffrt before they existed lack them;
the client asks for them only where the model's metadata lists them):
    backend          BYTES [1]      what ran the graph, e.g. "ffrt serve ffrt_model: onnxruntime-cpu (...)"
    precision        BYTES [1]      the precision it computed in ("fp32", "int8", "bf16", ...)
    latency_split    FP64 [4]       the server's queue, preprocess, inference, postprocess ms

Errors come back as Triton errors whose message starts with ``ffrt.<ErrorClass>: `` so the
client can raise the same ffrt error class the in-process Detector raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..regions import Region
from ..result import LatencySplit, Result
from ..errors import FFRTError, InferenceError, InvalidImageError

DETECTOR_MODEL = "ffrt_detector"
GRAPH_MODEL = "ffrt_model"
#: The file in ffrt_detector's version folder holding the model's metadata (an ONNX container
#: without a graph: ffrt reads metadata from ONNX files; the graph itself runs in ffrt_model).
META_FILE = "ffrt_meta.onnx"

INPUT_BYTES = "image_bytes"
INPUT_IMAGE = "image"

#: name -> (Triton config data type, tritonclient datatype, numpy dtype, dims without batch)
OUTPUTS: dict[str, tuple[str, str, type, tuple[int, ...]]] = {
    "score": ("TYPE_FP64", "FP64", np.float64, (1,)),
    "is_anomalous": ("TYPE_BOOL", "BOOL", np.bool_, (1,)),
    "normalized_score": ("TYPE_FP64", "FP64", np.float64, (1,)),
    "anomaly_map": ("TYPE_FP32", "FP32", np.float32, (-1, -1)),
    "mask": ("TYPE_BOOL", "BOOL", np.bool_, (-1, -1)),
    "regions": ("TYPE_FP64", "FP64", np.float64, (-1, 8)),
}
INFO_OUTPUTS: dict[str, tuple[str, str, type, tuple[int, ...]]] = {
    "backend": ("TYPE_STRING", "BYTES", np.object_, (1,)),
    "precision": ("TYPE_STRING", "BYTES", np.object_, (1,)),
    "latency_split": ("TYPE_FP64", "FP64", np.float64, (4,)),
}
INPUTS: dict[str, tuple[str, str, type, tuple[int, ...]]] = {
    INPUT_BYTES: ("TYPE_STRING", "BYTES", np.object_, (1,)),
    INPUT_IMAGE: ("TYPE_UINT8", "UINT8", np.uint8, (-1, -1, -1)),
}
REGION_COLUMNS = ("area_px", "x", "y", "w", "h", "centroid_x", "centroid_y", "peak_score")

#: Error classes a server may name; anything else arrives as a RemoteError.
_TAG = "ffrt."


def error_message(error: BaseException) -> str:
    """The message a refused request carries: ``ffrt.<Class>: <what to do>``."""
    name = type(error).__name__ if isinstance(error, FFRTError) else "InferenceError"
    text = str(error) if isinstance(error, FFRTError) else f"{type(error).__name__}: {error}"
    return f"{_TAG}{name}: {text}"


def parse_error(message: str) -> tuple[str, str] | None:
    """(class name, message) of an error written by :func:`error_message`, found anywhere in
    ``message`` (Triton and tritonclient may put their own words in front), else None."""
    at = message.find(_TAG)
    if at < 0:
        return None
    head, sep, text = message[at + len(_TAG):].partition(": ")
    if not sep or not head.isidentifier():
        return None
    return head, text.strip()


def regions_array(regions: tuple[Region, ...]) -> np.ndarray:
    """[R, 8] float64, one row per region in REGION_COLUMNS order (integers < 2**53 are exact)."""
    rows = [(r.area_px, *r.bbox, *r.centroid, r.peak_score) for r in regions]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(REGION_COLUMNS))


def regions_from_array(array: np.ndarray | None) -> tuple[Region, ...]:
    if array is None:
        return ()
    rows = np.asarray(array, dtype=np.float64).reshape(-1, len(REGION_COLUMNS))
    return tuple(
        Region(area_px=int(r[0]), bbox=(int(r[1]), int(r[2]), int(r[3]), int(r[4])),
               centroid=(float(r[5]), float(r[6])), peak_score=float(r[7]))
        for r in rows
    )


def result_tensors(result: Result, backend: str | None = None) -> dict[str, np.ndarray]:
    """The response tensors of one Result, each with the leading batch dimension of 1;
    ``backend`` (what ran the graph) and the Result's precision and latency split, where known,
    as the INFO_OUTPUTS."""
    norm = result.normalized_score
    tensors = {
        "score": np.array([[result.score]], dtype=np.float64),
        "is_anomalous": np.array([[result.is_anomalous]], dtype=np.bool_),
        "normalized_score": np.array([[math.nan if norm is None else norm]], dtype=np.float64),
        "anomaly_map": np.ascontiguousarray(result.anomaly_map, dtype=np.float32)[None],
        "mask": np.ascontiguousarray(result.mask, dtype=np.bool_)[None],
        "regions": regions_array(result.regions)[None],
    }
    if backend is not None:
        tensors["backend"] = np.array([[backend.encode()]], dtype=np.object_)
    if result.precision is not None:
        tensors["precision"] = np.array([[result.precision.encode()]], dtype=np.object_)
    split = result.latency_split
    if split is not None:
        tensors["latency_split"] = np.array(
            [[split.queue_ms, split.preprocess_ms, split.inference_ms, split.postprocess_ms]], dtype=np.float64)
    return tensors


def _text(array: np.ndarray | None) -> str | None:
    if array is None:
        return None
    value = np.asarray(array, dtype=np.object_).reshape(-1)[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def remote_split(server: np.ndarray | None, latency_ms: float) -> LatencySplit | None:
    """The split of a round trip of ``latency_ms``: the server's preprocess, inference and
    postprocess as it measured them, and as queue_ms everything else (the server's own
    queueing, the network, (de)serialization), so the four add up to the round trip."""
    if server is None:
        return None
    _, pre, inference, post = (float(v) for v in np.asarray(server, dtype=np.float64).reshape(-1)[:4])
    return LatencySplit(max(0.0, latency_ms - pre - inference - post), pre, inference, post)


def result_from_tensors(get: Callable[[str], np.ndarray | None], latency_ms: float) -> Result:
    """A Result from a response: ``get(name)`` returns an output's array (None if absent)."""
    missing = [name for name in ("score", "is_anomalous", "anomaly_map", "mask") if get(name) is None]
    if missing:
        raise InferenceError(
            f"the server's answer lacks the output(s) {', '.join(missing)}; is the model an ffrt_detector of this "
            "ffrt version? Rebuild the repository with 'ffrt triton-repo' or restart 'ffrt serve'."
        )
    score = float(np.asarray(get("score")).reshape(-1)[0])
    norm_array = get("normalized_score")
    norm = None if norm_array is None else float(np.asarray(norm_array).reshape(-1)[0])
    anomaly_map = np.asarray(get("anomaly_map"), dtype=np.float32)
    mask = np.asarray(get("mask"), dtype=np.bool_)
    return Result(
        score=score,
        is_anomalous=bool(np.asarray(get("is_anomalous")).reshape(-1)[0]),
        anomaly_map=anomaly_map.reshape(anomaly_map.shape[-2:]),
        mask=mask.reshape(mask.shape[-2:]),
        latency_ms=latency_ms,
        normalized_score=None if norm is None or math.isnan(norm) else norm,
        regions=regions_from_array(get("regions")),
        latency_split=remote_split(get("latency_split"), latency_ms),
        backend=_text(get("backend")),
        precision=_text(get("precision")),
    )


def one_image_error(shape: tuple[int, ...], what: str) -> InvalidImageError:
    return InvalidImageError(
        f"{what} holds {shape[0]} images (shape {tuple(shape)}); send one image per request (the server batches "
        "concurrent requests itself)."
    )

"""``ffrt_detector`` on Triton's Python backend: an ffrt Detector whose graph runs in ``ffrt_model``.

Triton loads ``ffrt_detector/1/model.py``, which imports :class:`TritonPythonModel` from here,
so the server runs ffrt's own code: each request's image is decoded and validated by
``ffrt.preprocess``, and a :class:`ffrt.Detector` does the resizing, thresholds, normalized
score, mask and regions exactly as in-process. Only its backend differs: ``triton-bls``
sends the uint8 batch to ``ffrt_model`` with Triton's business-logic scripting (BLS) and
reads back the anomaly maps and scores.

Python backend API used (python_backend README, "Usage" and "Business Logic Scripting",
https://github.com/triton-inference-server/python_backend): ``initialize(args)`` with
``args["model_config"]`` (JSON), ``args["model_repository"]`` (this model's folder) and
``args["model_version"]``; ``execute(requests)`` returns one ``InferenceResponse`` per request,
carrying a ``TritonError`` for a request that failed, so a bad image fails only its own
request of a dynamic batch; BLS: ``pb_utils.InferenceRequest(model_name, inputs,
requested_output_names).exec()``, ``response.has_error()`` / ``.error().message()``.
BLS may not be used in ``initialize``: nothing here runs the graph before ``execute``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..backends import Backend, BackendSpec, register_backend
from ..config import DetectorConfig
from ..detector import Detector
from ..errors import FFRTError, InferenceError, InvalidImageError
from ..meta import ModelMeta
from ..preprocess import decode_image_bytes, to_uint8_image
from . import protocol

BLS_BACKEND = "triton-bls"


class BLSBackend(Backend):
    """Runs the fused graph by a BLS request to another model of the same Triton server."""

    name = BLS_BACKEND

    def __init__(self, pb_utils, model_name: str, meta: ModelMeta, precision: str | None = None):
        self._pb = pb_utils
        self._model = model_name
        # What ffrt_model computes in (its config's parameter; the file's encoding by default):
        # the Detector puts it in every Result.
        self.precision = precision or meta.precision
        self._input = meta.input.name
        self._outputs = (meta.outputs.anomaly_map, meta.outputs.score)

    @property
    def providers(self) -> tuple[str, ...]:
        return (f"Triton model {self._model!r} (BLS)",)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pb = self._pb
        request = pb.InferenceRequest(
            model_name=self._model,
            requested_output_names=list(self._outputs),
            inputs=[pb.Tensor(self._input, np.ascontiguousarray(batch))],
        )
        response = request.exec()
        if response.has_error():
            raise InferenceError(f"Triton model {self._model!r} failed: {response.error().message()}")
        maps = pb.get_output_tensor_by_name(response, self._outputs[0]).as_numpy()
        scores = pb.get_output_tensor_by_name(response, self._outputs[1]).as_numpy()
        # The score leaves ffrt_model as [N, 1] (config dims [1], reshaped to the graph's [N]).
        return maps, np.asarray(scores).reshape(len(batch))


def _parameters(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def _number(params: dict[str, str], key: str, kind=float):
    value = params.get(key, "").strip()
    if value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise InferenceError(
            f"{protocol.DETECTOR_MODEL}/config.pbtxt: parameter {key!r} must be a number, not {value!r}; fix it and "
            "reload the model."
        ) from None


class TritonPythonModel:
    """The ``ffrt_detector`` model (Triton instantiates it once per model instance)."""

    def initialize(self, model_args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(model_args["model_config"])
        params = _parameters(config)
        graph_model = params.get("graph_model") or protocol.GRAPH_MODEL
        self._chunk = _number(params, "graph_max_batch", int)
        self._graph_backend = params.get("graph_backend") or f"Triton {graph_model}"
        graph_precision = params.get("graph_precision") or None
        # A repository written before the INFO_OUTPUTS existed does not declare them; Triton
        # refuses outputs a model's configuration lacks.
        declared = {o.get("name") for o in config.get("output", [])}
        self._info = [name for name in protocol.INFO_OUTPUTS if name in declared]
        meta_path = Path(model_args["model_repository"]) / str(model_args["model_version"]) / protocol.META_FILE

        def create(path, meta, threads, device, **_):  # precision/options: the graph's own, ffrt_model's config
            return BLSBackend(pb_utils, graph_model, meta, graph_precision)

        # Registered in this stub process only (one per model instance); the Detector then
        # builds it like any other backend.
        register_backend(BackendSpec(BLS_BACKEND, probe=lambda: None, create=create))
        settings = {"image_threshold": _number(params, "image_threshold"),
                    "pixel_threshold": _number(params, "pixel_threshold")}
        for key in ("max_pixels", "min_side", "min_region_px"):
            value = _number(params, key, int)
            if value is not None:
                settings[key] = value
        self.detector = Detector(meta_path, DetectorConfig.build(backend=BLS_BACKEND, **settings))

    def _image(self, request) -> np.ndarray:
        pb = self._pb
        encoded = pb.get_input_tensor_by_name(request, protocol.INPUT_BYTES)
        raw = pb.get_input_tensor_by_name(request, protocol.INPUT_IMAGE)
        if (encoded is None) == (raw is None):
            raise InvalidImageError(
                f"send exactly one of the inputs '{protocol.INPUT_BYTES}' (an encoded image file: PNG, JPEG, ...) and "
                f"'{protocol.INPUT_IMAGE}' (uint8 H x W x C, C = 1 or 3, BGR); this request has "
                f"{'both' if encoded is not None else 'neither'}."
            )
        if encoded is not None:
            array = encoded.as_numpy()
            if array.size != 1:
                raise protocol.one_image_error(array.shape, f"'{protocol.INPUT_BYTES}'")
            data = array.reshape(-1)[0]
            data = data.encode() if isinstance(data, str) else bytes(data)
            det = self.detector
            return decode_image_bytes(data, det.limits, det.meta.input, where=f"'{protocol.INPUT_BYTES}'")
        array = raw.as_numpy()
        if array.shape[0] != 1:
            raise protocol.one_image_error(array.shape, f"'{protocol.INPUT_IMAGE}'")
        # Checked here, one request at a time, so that a refusal reads as for a direct call
        # (predict_batch would prefix "image i of n", a position in Triton's batch).
        det = self.detector
        to_uint8_image(array[0], det.color_order, det.limits, det.meta.input)
        return array[0]

    def execute(self, requests: list) -> list:
        pb = self._pb
        responses: list = [None] * len(requests)
        images, slots = [], []
        for i, request in enumerate(requests):
            try:
                images.append(self._image(request))
                slots.append(i)
            except FFRTError as e:
                responses[i] = self._error(e)
        if images:
            try:
                outcomes = self.detector.predict_batch(images, batch_size=self._chunk, errors="return")
            except Exception as e:  # the batch failed as a whole (ffrt_model down): every request says why
                outcomes = [e] * len(images)
            for i, outcome in zip(slots, outcomes):
                if isinstance(outcome, BaseException):
                    responses[i] = self._error(outcome)
                else:
                    tensors = protocol.result_tensors(outcome, self._graph_backend)
                    names = [*protocol.OUTPUTS, *(n for n in self._info if n in tensors)]
                    responses[i] = pb.InferenceResponse(output_tensors=[pb.Tensor(k, tensors[k]) for k in names])
        return responses

    def _error(self, error: BaseException):
        pb = self._pb
        return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(protocol.error_message(error)))

    def finalize(self) -> None:
        self.detector.close()

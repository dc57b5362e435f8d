"""How a Detector is set up, as one typed object: :class:`DetectorConfig`.

    cfg = DetectorConfig.build(backend="openvino", precision="bf16", threads=4, max_pixels=20_000_000)
    det = Detector("model.onnx", cfg)               # or Detector("model.onnx", threads=4, ...)
    print(cfg.model_dump_json(indent=2))            # what ``ffrt info MODEL --config`` prints

Every entry point builds it the same way: ``Detector(path, **settings)`` and
:meth:`DetectorConfig.build` take the same flat names; the command lines (``ffrt detect``,
``ffrt run``, ``ffrt serve``, ``ffrt info``) map their arguments through one function,
``ffrt.basecli.detector_config``; the Triton model ``ffrt_detector`` builds it from its
config.pbtxt parameters with :meth:`DetectorConfig.build`.

Each setting is checked by the same function that always checked it, so a bad value raises
one :class:`~ffrt.errors.InvalidArgumentError` with the message that says what to do,
before any model is loaded.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .backends.base import Precision, check_precision, check_threads
from .batching import DEFAULT_MAX_DELAY_MS, DEFAULT_QUEUE_SIZE, DEFAULT_THREADS, PipelineConfig
from .drift import DEFAULT_DRIFT_WINDOW, check_window
from .errors import FFRTError, InvalidArgumentError
from .preprocess import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, ImageLimits, check_color_order
from .regions import check_min_region_px
from .stats import DEFAULT_WINDOW


class BackendRequest(BaseModel):
    """Which backend to run on and how: ``name`` ("auto" or an ffrt backend name), the GPU
    ``device`` index, CPU ``threads`` (None: all physical cores), the ``precision`` and the
    backend's own ``options`` (openvino: performance_hint, infer_requests, batch_shapes, keep_fp32)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "auto"
    device: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1)
    precision: Precision = Precision.AUTO
    options: dict[str, Any] = Field(default_factory=dict)


#: The flat names of Detector(...) / build() that make up the BackendRequest.
_BACKEND_NAMES = {"backend": "name", "device": "device", "threads": "threads", "precision": "precision",
                  "backend_options": "options"}


class DetectorConfig(BaseModel):
    """Everything ``Detector(model, config)`` takes besides the model; see ``Detector`` for
    what each setting does."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: BackendRequest = Field(default_factory=BackendRequest)
    color_order: str = "BGR"
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    resize_outputs: bool | Literal["flagged"] = True
    stats_window: int = DEFAULT_WINDOW
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE
    min_region_px: int = 0
    max_batch: int | None = None
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    queue_size: int = DEFAULT_QUEUE_SIZE
    queue_policy: str = "block"
    pipeline_threads: int = DEFAULT_THREADS
    drift_window: int = DEFAULT_DRIFT_WINDOW

    @model_validator(mode="before")
    @classmethod
    def _checked(cls, data: Any) -> Any:
        """The long-standing checks, with their messages, before pydantic's types."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "color_order" in data:
            data["color_order"] = check_color_order(data["color_order"])
        ImageLimits(data.get("max_pixels", DEFAULT_MAX_PIXELS), data.get("min_side", DEFAULT_MIN_SIDE))
        for key in ("max_pixels", "min_side"):
            if isinstance(data.get(key), np.integer):
                data[key] = int(data[key])
        if "min_region_px" in data:
            data["min_region_px"] = check_min_region_px(data["min_region_px"])
        if "drift_window" in data:
            data["drift_window"] = check_window(data["drift_window"])
        max_batch = data.get("max_batch")
        PipelineConfig(1 if max_batch is None else max_batch, data.get("max_delay_ms", DEFAULT_MAX_DELAY_MS),
                       data.get("queue_size", DEFAULT_QUEUE_SIZE), data.get("queue_policy", "block"),
                       data.get("pipeline_threads", DEFAULT_THREADS))
        if isinstance(max_batch, np.integer):
            data["max_batch"] = int(max_batch)
        return data

    @classmethod
    def build(cls, base: "DetectorConfig | None" = None, **settings: Any) -> "DetectorConfig":
        """A config from the flat names ``Detector(...)`` takes (backend, device, threads,
        precision, backend_options, color_order, ..., drift_window), on top of ``base`` (default:
        the defaults). A value of None for backend/device/precision/backend_options keeps the
        base's. Raises InvalidArgumentError naming the bad setting."""
        base = base or cls()
        backend = base.backend.model_dump()
        fields = base.model_dump(exclude={"backend"})
        for key, value in settings.items():
            if key in _BACKEND_NAMES:
                if value is None and key != "threads":
                    continue
                backend[_BACKEND_NAMES[key]] = value
            elif key in fields:
                fields[key] = value
            else:
                raise InvalidArgumentError(
                    f"Detector has no setting {key!r}; the settings are: {', '.join(sorted([*_BACKEND_NAMES, *fields]))}.")
        backend["precision"] = check_precision(backend["precision"])
        check_threads(backend["threads"])
        if not isinstance(backend["options"], dict):
            raise InvalidArgumentError(
                f"backend_options must be a dict or None, not {type(backend['options']).__name__}.")
        device = backend["device"]
        if not isinstance(device, (int, np.integer)) or isinstance(device, bool) or device < 0:
            raise InvalidArgumentError(f"device must be a GPU index >= 0, not {device!r}.")
        backend["device"] = int(device)
        try:
            return cls(backend=BackendRequest(**backend), **fields)
        except ValidationError as e:
            raise _one_error(e) from None

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(self.max_pixels, self.min_side)

    def pipeline(self, max_batch: int) -> PipelineConfig:
        """The batching of ``Detector.submit`` once ``max_batch`` is settled against the model."""
        return PipelineConfig(max_batch, self.max_delay_ms, self.queue_size, self.queue_policy, self.pipeline_threads)


def _one_error(e: ValidationError) -> FFRTError:
    """The first problem of a ValidationError as one InvalidArgumentError (or the ffrt error
    a check raised inside pydantic)."""
    first = e.errors()[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, FFRTError):
        return original
    where = ".".join(str(p) for p in first["loc"]) or "config"
    return InvalidArgumentError(f"{where}: {first['msg']} (got {first.get('input')!r}).")

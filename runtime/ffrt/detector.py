"""``Detector``: image(s) in, score / decision / anomaly map / mask out.

    det = Detector("model.onnx")          # backend="auto": fastest that works here
    r = det(frame_bgr)                    # numpy BGR/gray array, float in [0,1], or a path
    if r.is_anomalous: reject(r.mask)
    print(det.stats)                      # p50/p90/p99 latency and FPS of the last 1000 calls

One call = the stages of ``ffrt.stages``: prepare (validate, decode, resize, colour) ->
run (the backend on the uint8 NHWC batch) -> finish (thresholds, the map back onto the frame). Thresholds come from
the model's metadata and can be re-tuned at run time with :meth:`Detector.set_thresholds`.

Thread-safety: a Detector may be shared by several threads. Preprocessing keeps no
state; every backend's ``run`` may be called concurrently (ONNX Runtime sessions are
thread-safe for ``run``; the TensorRT backend gives each call its own execution slot); the
thresholds are one immutable object swapped atomically; the latency window is locked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ffcore.files import ENGINE_SUFFIXES

from .backends import create_backend
from .backends.kinds import target_matches
from .batching import Pipeline
from .config import DetectorConfig
from .drift import DriftMonitor, Health, target_frr_from_source
from .errors import BackendUnavailableError, InferenceError, InvalidArgumentError, InvalidImageError, ModelFileError
from .meta import ModelMeta, Thresholds
from .threshold_rules import new_thresholds, numerics_mismatch
from .metafile import read_onnx_meta
from .postprocess import Postprocessor
from .preprocess import ImageLimits, check_model_batch
from .result import Result
from .stages import Stages
from .stats import LatencyStats, LatencyWindow, PipelineRecorder, PipelineStats

log = logging.getLogger("ffrt")

#: Chunk size of predict_batch when neither batch_size nor the model's batch_max says.
DEFAULT_BATCH_SIZE = 8


class ImageSize(NamedTuple):
    height: int
    width: int


class Detector:
    """Loads an ffrt model and runs it on images.

    model_path:      an .onnx exported by ffexport, or a TensorRT .engine built by
                     ffexport --engine (runs on backend "tensorrt"; its .json sidecar
                     must match this TensorRT and GPU).
    backend:         "auto" (default: the fastest that works here; see ``backend_name``,
                     ``backend_selection`` and ``backend_choice``; on the CPU the faster of
                     ONNX Runtime and OpenVINO, measured once per model and machine),
                     "openvino", "onnxruntime-cuda", "onnxruntime-cpu", ... (ffrt backends).
    precision:       the float precision of the CPU compute: "auto" (default: FP32, or BF16 on
                     OpenVINO when the file carries a passed BF16 accuracy gate and the CPU has
                     native BF16), "fp32", or "bf16" (backend "openvino" on a CPU with AMX or
                     AVX512-BF16; the anomaly head stays FP32). INT8/FP16 parts of a file run
                     as encoded. What actually ran: ``precision``, ``precision_detail``.
    backend_options: options of the chosen backend (openvino: performance_hint,
                     infer_requests, batch_shapes, keep_fp32; see ffrt.backends.openvino).
    color_order:     channel order of 3-channel numpy inputs, "BGR" (OpenCV, most camera
                     SDKs) or "RGB" (PIL, imageio). Files are decoded as BGR regardless.
    threads:         CPU inference threads; None = all physical cores.
    image_threshold, pixel_threshold: override the metadata's thresholds for this
                     Detector (the file is not changed).
    resize_outputs:  return anomaly_map/mask at each input's original size (True) or at
                     the model size (False, cheaper). Full-size outputs cost 5 bytes per
                     input pixel (float32 map + bool mask): 500 MB for a 100 MP frame.
                     "flagged": at the original size for images that fail or have a pixel
                     above the pixel threshold, at the model size for the others (their
                     mask is empty and their regions none at any size); ``ffrt run`` uses it.
    stats_window:    how many recent calls ``stats`` summarizes.
    device:          index of the NVIDIA GPU the GPU backends use (default 0; the order of
                     the CUDA driver, which ``CUDA_VISIBLE_DEVICES`` restricts).
    max_pixels:      images larger than this (height x width) are refused with an
                     InvalidImageError; default 100 megapixels (DEFAULT_MAX_PIXELS), None =
                     no limit. Image files are checked from their header before decoding
                     (PNG, JPEG, BMP, TIFF, WebP, PNM, HDR, Sun raster; other formats after
                     decoding), so a decompression bomb costs nothing.
    min_side:        images whose shorter side is below this are refused; default 8 px
                     (DEFAULT_MIN_SIDE): a 1 x 5000 strip stretched to the model size would
                     score as an anomaly without meaning it.
    min_region_px:   ``Result.regions`` leaves out regions of fewer frame pixels than this
                     (default 0: all). It does not change ``is_anomalous`` (see Result).
    max_batch, max_delay_ms, queue_size, queue_policy, pipeline_threads: the batching of
                     :meth:`submit` (see ``ffrt.batching``): up to ``max_batch`` images per
                     backend call (default: the model's batch_max, else 8), waiting at most
                     ``max_delay_ms`` (default 2) for a batch to fill; at most ``queue_size``
                     (64) images wait, and when full ``queue_policy`` "block" (default) waits,
                     "reject" raises QueueFullError, "drop_oldest" cancels the oldest; pre-
                     and postprocessing run in pools of ``pipeline_threads`` (2) threads.
    drift_window:    how many recent scores :meth:`health` compares with calibration (200).
    """

    def __init__(self, model_path: str | Path, config: DetectorConfig | None = None, **settings) -> None:
        # Cheap argument checks first: a typo must not cost a model load.
        self._backend = None
        if config is not None and not isinstance(config, DetectorConfig):
            raise InvalidArgumentError(
                f"Detector(model, config): config must be a DetectorConfig or None, not {type(config).__name__} "
                f"{config!r}; settings go by name, e.g. Detector(model, backend={config!r}).")
        cfg = DetectorConfig.build(config, **settings)
        self._config = cfg
        self._color_order = cfg.color_order
        self._device = cfg.backend.device
        self._limits = cfg.limits
        self._pipeline: Pipeline | None = None  # started by the first submit
        self._pipeline_lock = threading.Lock()
        self._closed = False
        backend = cfg.backend.name
        path = Path(model_path)
        if not path.exists():
            raise ModelFileError(f"{path}: no such model file.")
        suffix = path.suffix.lower()
        is_engine = suffix in ENGINE_SUFFIXES
        if is_engine:
            # A plan runs only on the native TensorRT backend; its sidecar (ffrt.tensorrt.build) is
            # checked against this machine when loaded.
            if str(backend).strip().lower() not in ("auto", "tensorrt"):
                raise InvalidArgumentError(
                    f"{path}: a TensorRT engine runs only with backend=\"tensorrt\" (or \"auto\"), not {backend!r}; "
                    "load the .onnx it was built from for the other backends."
                )
            from .tensorrt.build import missing_for_tensorrt
            from .tensorrt.plan import engine_meta

            missing = missing_for_tensorrt(cfg.backend.device)
            if missing is not None:
                raise BackendUnavailableError(
                    f"{path}: TensorRT engine files need the native TensorRT backend, which is not available here: "
                    f"{missing}. Or load the .onnx model the engine was built from (backend=\"auto\")."
                )
            backend = "tensorrt"
        elif suffix != ".onnx":
            raise ModelFileError(f"{path}: expected an .onnx model exported by ffexport (got a {suffix or 'suffix-less'} file).")

        # Metadata before any session: a non-ffrt file or a newer schema fails here, with
        # the clear message, instead of deep inside a backend.
        # An engine's thresholds come from the ONNX next to it when it is the plan's source
        # graph (engine.engine_meta): re-tuned thresholds apply without a rebuild.
        self._meta: ModelMeta = engine_meta(path) if is_engine else read_onnx_meta(path)
        self._model_path = path
        self._thresholds: Thresholds = self._initial_thresholds()  # checked before any backend loads
        self._resize_outputs = cfg.resize_outputs
        self._stats = LatencyWindow(cfg.stats_window)
        self._recorder = PipelineRecorder(cfg.stats_window)
        self._pipeline_config = cfg.pipeline(self._chunk_size(cfg.max_batch, "max_batch"))

        request = cfg.backend
        self._backend, self._selection = create_backend(backend, path, self._meta, request.threads, request.device,
                                                        request.precision.value, request.options)
        variant = getattr(self._backend, "variant", None)
        if variant is not None:
            # "auto" runs a gated precision variant of this file (backends/variants.py): its
            # head and its thresholds belong together.
            self._meta = variant.meta
            self._thresholds = self._initial_thresholds()
            log.info("ffrt: %s: runs %s (%s)", path, variant.path.name, self._backend.choice)
        self._drift = DriftMonitor(self._meta.score_stats, self._thresholds.image, self._target_frr(), cfg.drift_window)
        stats = self._meta.score_stats
        post = Postprocessor(
            resize_outputs=self._resize_outputs,
            norm_scale=stats.std if stats is not None and stats.std > 0 else None,
            min_region_px=cfg.min_region_px, backend=self._backend.name, precision=self._backend.precision,
        )
        self._stages = Stages(self.running_path, self._meta.input, self._color_order, self._limits, self._backend, post)
        if mismatch := numerics_mismatch(self._thresholds, self._backend.name, self._backend.precision):
            log.warning("ffrt: %s: %s", path, mismatch)
        if not target_matches(self._meta.target, self._backend.name):
            log.warning(
                "ffrt: %s is encoded for target %r (%s) but runs on %s; it will work, but may be slow or "
                "less accurate there. Use the file made for this backend (ffcalib int8 writes "
                "model.int8-cpu.onnx for CPUs, model.int8-trt.onnx for TensorRT).",
                path, self._meta.target, self._meta.precision, self._backend.name,
            )

    # -- properties --------------------------------------------------------------------

    @property
    def config(self) -> DetectorConfig:
        """The settings this Detector was made with (thresholds set later: :attr:`thresholds`)."""
        return self._config

    @property
    def meta(self) -> ModelMeta:
        """The model's metadata as stored in the file (thresholds there may differ from
        :attr:`thresholds` after overrides or :meth:`set_thresholds`)."""
        return self._meta

    @property
    def model_path(self) -> Path:
        """The file this Detector was asked to load."""
        return self._model_path

    @property
    def running_path(self) -> Path:
        """The file that runs: :attr:`model_path`, or the gated precision variant next to it
        that ``backend="auto"`` measured faster (e.g. model.bf16.onnx; ``backends/variants.py``)."""
        variant = getattr(self._backend, "variant", None)
        return self._model_path if variant is None else variant.path

    @property
    def stages(self) -> Stages:
        """The pipeline every call runs (prepare -> run -> finish, ``ffrt.stages``), for tools
        that time or drive its stages one by one (ffbench)."""
        return self._stages

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def backend_description(self) -> str:
        """Backend with the providers it actually uses, e.g. 'onnxruntime-cpu (CPUExecutionProvider, 8 threads)'."""
        return self._backend.description

    @property
    def backend_selection(self) -> tuple[str, ...]:
        """For backend="auto": each faster backend that was skipped, and why."""
        return self._selection

    @property
    def backend_choice(self) -> str:
        """For backend="auto" on a CPU: how this CPU backend was chosen over the others
        (measured figures, or why the others could not start); "" for an explicit backend."""
        return self._backend.choice

    @property
    def precision(self) -> str:
        """The precision the backend computes in: "fp32", "bf16", "fp16", "int8", "int8+bf16"."""
        return self._backend.precision

    @property
    def precision_detail(self) -> str:
        """Which parts ran in which precision, and why (e.g. why precision="auto" chose FP32)."""
        return self._backend.precision_detail or f"{self.precision} (as the file encodes it)"

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds in use now."""
        return self._thresholds

    @property
    def stats(self) -> LatencyStats:
        """Latency/FPS of the last ``stats_window`` successful calls (warmup excluded)."""
        return self._stats.snapshot().model_copy(update={"backend": self.backend_name, "precision": self.precision})

    @property
    def input_size(self) -> ImageSize:
        """(height, width) every image is resized to before inference."""
        return ImageSize(self._meta.input.height, self._meta.input.width)

    @property
    def color_order(self) -> str:
        return self._color_order

    @property
    def limits(self) -> ImageLimits:
        """The image sizes this Detector accepts (``max_pixels``, ``min_side``)."""
        return self._limits

    @property
    def device(self) -> int:
        """The GPU index the GPU backends use (unused by the CPU backend)."""
        return self._device

    def close(self, cancel_pending: bool = False) -> None:
        """Finish the submitted images (``cancel_pending=True``: cancel those still waiting
        for a batch), end the :meth:`submit` threads, then release the backend (GPU memory,
        CUDA context, sessions). Idempotent; afterwards every call raises InferenceError.
        ``with Detector(...) as det:`` calls it."""
        with self._pipeline_lock:
            self._closed = True
            pipeline = self._pipeline
        if pipeline is not None:
            pipeline.close(cancel_pending=cancel_pending)
        backend = self._backend
        if backend is not None:
            backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"Detector({str(self._model_path)!r}, backend={self.backend_name!r}, input {h}x{w})"

    # -- configuration -----------------------------------------------------------------

    def set_thresholds(self, image: float | None = None, pixel: float | None = None) -> Thresholds:
        """Re-tune the decision thresholds at run time (None keeps the current value).

        Takes effect for calls that start afterwards; the model file is not changed (to
        store thresholds in the model, use ffcalib or ``ffrt.metafile.write_onnx_meta``).
        Returns the new thresholds.
        """
        self._thresholds = new_thresholds(self._thresholds, image, pixel, "set at run time (set_thresholds)")
        self._drift.set_threshold(self._thresholds.image, self._target_frr())
        return self._thresholds

    def reset_stats(self) -> None:
        """Forget the timed calls (e.g. after a warm-up phase of your own)."""
        self._stats.reset()

    def pipeline_stats(self, source: object = None) -> PipelineStats:
        """Latency per stage, throughput and counters of :meth:`submit` for one ``source`` or
        (None) all (:class:`~ffrt.stats.PipelineStats`); direct calls are in :attr:`stats`."""
        pipeline = self._pipeline
        return self._recorder.snapshot(source, pipeline.queue_depth if pipeline is not None else 0)

    def health(self) -> Health:
        """Whether the recent scores (of every call and submit) still match the normal
        scores the model was calibrated on; see ``ffrt.drift``. A change of state is also
        logged as a warning (logger "ffrt")."""
        return self._drift.health()

    # -- inference ---------------------------------------------------------------------

    def __call__(self, image: object) -> Result:
        """Detect on one image (numpy array or path). See :class:`Result`."""
        if isinstance(image, (list, tuple)) or (isinstance(image, np.ndarray) and image.ndim == 4):
            raise InvalidImageError(
                f"Detector(...)(image) takes one image; got a {type(image).__name__}"
                f"{' of shape ' + str(image.shape) if isinstance(image, np.ndarray) else ''}. "
                "For several images use det.predict_batch(images)."
            )
        return self._detect([image], chunk=1)[0]

    def submit(self, image: object, *, source: object = None) -> Future:
        """Queue one image for batched detection; returns a ``concurrent.futures.Future``
        whose result is its :class:`Result` (or the error ``det(image)`` would raise).

        ``source`` names the camera (any hashable; reported as a string in
        :meth:`pipeline_stats`). The futures of one source complete in submission order.
        The image is read by a worker thread after this returns: do not reuse a camera
        buffer until its future is done (or submit a copy). Done-callbacks run in the
        worker that resolves futures: keep them short. See ``ffrt.batching``.
        """
        pipeline = self._pipeline
        if pipeline is None:
            with self._pipeline_lock:
                if self._closed:
                    raise InferenceError("this Detector is closed; submit() needs an open Detector: create a new one.")
                if self._pipeline is None:
                    self._pipeline = Pipeline(
                        self, self._pipeline_config, self._stages, self._recorder, self._drift.add,
                    )
                pipeline = self._pipeline
        return pipeline.submit(image, source)

    def predict_batch(
        self, images: Iterable[object], batch_size: int | None = None, errors: str = "raise"
    ) -> list[Result] | list[Result | InvalidImageError]:
        """Detect on several images; returns one outcome per image, in order.

        errors="raise" (default): all images are validated and resized before the first
        chunk runs, so a bad image raises (naming its position) without any inference.
        errors="return": a bad image does not cost the others: its place in the returned
        list holds the InvalidImageError (or ImageFileError) that refused it, every other
        place a Result. Test with ``isinstance(outcome, Result)``. Backend failures
        (InferenceError) still raise: they concern the batch, not one image.

        Inference runs in chunks of ``batch_size`` images (default: the model's
        ``batch_max``, else 8); ``batch_size`` may not exceed ``batch_max``. Memory holds
        all images at the model size: slice very long lists. The call is timed as one:
        every Result carries the whole call's latency and ``stats`` counts one call of the
        images that were scored.
        """
        if errors not in ("raise", "return"):
            raise InvalidArgumentError(f"errors must be 'raise' or 'return', not {errors!r}.")
        if images is None:
            raise InvalidImageError(
                "predict_batch got None instead of a list of images. The code that collects the frames "
                "produced nothing; pass a list (possibly empty)."
            )
        if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__"):
            raise InvalidImageError("predict_batch takes a list of images; for a single path call det(path).")
        if isinstance(images, np.ndarray):
            if images.ndim != 4:
                raise InvalidImageError(
                    f"predict_batch got one array of shape {images.shape}; pass a list of images, or an "
                    "N x H x W x C array. For a single image call det(image)."
                )
        try:
            items = list(images)
        except TypeError:
            raise InvalidImageError(
                f"predict_batch takes a list of images, not an object of type {type(images).__name__}; for a single "
                "image call det(image)."
            ) from None
        chunk = self._chunk_size(batch_size)
        if not items:
            return []
        return self._detect(items, chunk, errors)

    def warmup(self, n: int = 3, batch_size: int = 1) -> None:
        """Run ``n`` inferences on a blank batch so that lazy initialisation (memory
        arenas, kernel selection, CUDA context) happens now, not on the first part.
        Warm-up calls are not recorded in :attr:`stats`."""
        if n < 0:
            raise InvalidArgumentError(f"warmup n must be >= 0, not {n}.")
        chunk = self._chunk_size(batch_size)
        h, w = self.input_size
        blank = np.zeros((chunk, h, w, 3), dtype=np.uint8)
        for _ in range(n):
            self._stages.run(blank)

    def run_model(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph alone on a uint8 [N, H, W, 3] RGB batch at the model size: (maps [N, 1, H, W],
        scores [N]) as the backend returns them; no thresholds, not timed (ffrt serve's ffrt_model)."""
        return self._stages.run(check_model_batch(batch, self._meta.input))

    # -- internals ---------------------------------------------------------------------

    def _chunk_size(self, batch_size: int | None, name: str = "batch_size") -> int:
        batch_max = self._meta.batch_max
        if batch_size is None:
            return batch_max or DEFAULT_BATCH_SIZE
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer or None, not {batch_size!r}.")
        if batch_max is not None and batch_size > batch_max:
            raise InvalidArgumentError(
                f"{name} {batch_size} exceeds this model's batch_max {batch_max} (the largest batch it was "
                f"exported for); use {name} <= {batch_max}, or re-export with a larger batch."
            )
        return int(batch_size)

    def _detect(self, images: list, chunk: int, errors: str = "raise") -> list:
        # Reads the thresholds once: a concurrent set_thresholds never mixes old and new.
        done = self._stages.detect(images, chunk, self._thresholds, errors)
        if done.images:
            self._stats.record(done.seconds, done.images, end=done.ended)
            self._drift.add(done.scores)
        return done.outcomes

    def _initial_thresholds(self) -> Thresholds:
        """The file's thresholds with the Detector(...) overrides applied."""
        cfg, base = self._config, self._meta.thresholds
        if cfg.image_threshold is None and cfg.pixel_threshold is None:
            return base
        return new_thresholds(base, cfg.image_threshold, cfg.pixel_threshold, "set in Detector(...)")

    def _target_frr(self) -> float | None:
        """The false-reject rate the image threshold in use was calibrated at, if known."""
        base = self._meta.thresholds
        return target_frr_from_source(base.source) if self._thresholds.image == base.image else None

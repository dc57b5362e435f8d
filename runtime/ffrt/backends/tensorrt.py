"""Native TensorRT backend ("tensorrt"): tensorrt + pycuda, no torch, no onnxruntime.

Loads a plan (an ``.engine`` with its sidecar, or builds/reuses a cached plan for an
``.onnx``: see :mod:`ffrt.engine`) and runs it:

* the device's **primary context** is retained once and pushed/popped around every call,
  so one Detector works from any thread (no ``pycuda.autoinit``, which binds a new context
  to the importing thread);
* one execution context + one CUDA stream + pinned host buffers + device buffers per
  worker slot; a call takes a free slot, so several threads run concurrently up to the
  number of slots (each slot is used by one thread at a time);
* dynamic batch within the plan's optimization profile (``set_input_shape`` per call);
* tensor names, modes, dtypes and shapes through the name-based tensor API
  (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_dtype``,
  ``set_tensor_address``, ``execute_async_v3``); the deprecated bindings API is not used.

API references: TensorRT Python API, ICudaEngine / IExecutionContext
(https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/ExecutionContext.html,
.../Core/Engine.html); PyCUDA driver interface (https://documen.tician.de/pycuda/driver.html:
Device.retain_primary_context, Context.push/pop, pagelocked_empty, mem_alloc, Stream,
memcpy_htod_async/memcpy_dtoh_async).
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import numpy as np

from ..engine import (
    check_engine,
    cached_plan,
    gpu_info,
    missing_for_tensorrt,
    read_engine_info,
    tensorrt_version,
)
from ffcore.files import ENGINE_SUFFIXES  # noqa: F401

from ..errors import BackendUnavailableError, InferenceError, InvalidArgumentError, ModelFileError
from ..meta import ModelMeta
from .base import Backend, BackendSpec, register_backend

log = logging.getLogger("ffrt")

#: Execution contexts (each with its stream and buffers) per backend: concurrent callers.
DEFAULT_SLOTS = 2


class _Slot:
    """One execution context, its stream, pinned host and device buffers (sized for max batch)."""

    def __init__(self, trt, cuda, engine, names, max_batch: int):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (GPU out of memory?)")
        self.stream = cuda.Stream()
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, object] = {}
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = list(engine.get_tensor_shape(name))
            shape[0] = max_batch
            if any(d < 0 for d in shape[1:]):
                raise ModelFileError(f"TensorRT tensor {name!r} has a dynamic non-batch dimension {shape}; ffrt plans have only a dynamic batch")
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            self.host[name] = host
            self.device[name] = cuda.mem_alloc(host.nbytes)
            self.context.set_tensor_address(name, int(self.device[name]))


class TensorRTBackend(Backend):
    name = "tensorrt"
    concurrent_safe = True  # each call takes its own slot

    def __init__(self, model_path: Path, meta: ModelMeta, slots: int = DEFAULT_SLOTS, cache_dir=None):
        reason = missing_for_tensorrt()
        if reason is not None:
            raise BackendUnavailableError(reason)
        import pycuda.driver as cuda  # noqa: PLC0415
        import tensorrt as trt  # noqa: PLC0415

        model_path = Path(model_path)
        if model_path.suffix.lower() == ".onnx":
            plan_path = cached_plan(model_path, meta, cache_dir=cache_dir, log=lambda m: log.info("%s", m))
        else:
            plan_path = model_path
        info = read_engine_info(plan_path)
        plan = plan_path.read_bytes()
        gpu = gpu_info()
        check_engine(plan_path, plan, info, tensorrt_version=tensorrt_version(),
                     compute_capability=gpu.compute_capability if gpu else None)
        self.info = info
        self.plan_path = plan_path
        self._meta = meta
        self._cuda = cuda

        cuda.init()
        self._device = cuda.Device(0)
        self._ctx = self._device.retain_primary_context()
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise ModelFileError(f"{plan_path}: TensorRT {trt.__version__} could not deserialize this plan.")
            names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
            inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            self._check_contract(trt, inputs, outputs)
            self._input = inputs[0]
            self._outputs = (meta.outputs.anomaly_map, meta.outputs.score)
            # Profile 0: the batch range this plan accepts.
            mn, _, mx = self._engine.get_tensor_profile_shape(self._input, 0)
            self.batch_min, self.batch_max = int(mn[0]), int(mx[0])
            self._slots: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
            for _ in range(max(1, slots)):
                self._slots.put(_Slot(trt, cuda, self._engine, names, self.batch_max))
        finally:
            cuda.Context.pop()
        self._lock = threading.Lock()

    def _check_contract(self, trt, inputs, outputs) -> None:
        meta = self._meta
        where = str(self.plan_path)
        if inputs != [meta.input.name]:
            raise ModelFileError(f"{where}: plan inputs {inputs}, metadata says [{meta.input.name!r}]; rebuild the engine.")
        if self._engine.get_tensor_dtype(inputs[0]) != trt.DataType.UINT8:
            raise ModelFileError(f"{where}: input {inputs[0]!r} is {self._engine.get_tensor_dtype(inputs[0])}, ffrt plans take uint8.")
        for want in (meta.outputs.anomaly_map, meta.outputs.score):
            if want not in outputs:
                raise ModelFileError(f"{where}: plan has no output {want!r} (it has {outputs}); rebuild the engine.")
            if self._engine.get_tensor_dtype(want) != trt.DataType.FLOAT:
                raise ModelFileError(f"{where}: output {want!r} is {self._engine.get_tensor_dtype(want)}, expected float32.")

    @property
    def providers(self) -> tuple[str, ...]:
        return (f"TensorRT {self.info.tensorrt_version}", self.info.gpu_name, self.info.precision)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = int(batch.shape[0])
        if not (self.batch_min <= n <= self.batch_max):
            raise InvalidArgumentError(
                f"batch of {n} is outside this engine's profile {self.batch_min}..{self.batch_max}; "
                "use predict_batch (it splits batches) or rebuild with a larger --batch-max"
            )
        cuda = self._cuda
        slot = self._slots.get()
        self._ctx.push()
        try:
            ctx = slot.context
            if not ctx.set_input_shape(self._input, tuple(batch.shape)):
                raise InferenceError(f"TensorRT rejected input shape {tuple(batch.shape)}")
            host_in = slot.host[self._input]
            flat = np.ascontiguousarray(batch).reshape(-1)
            host_in[: flat.size] = flat
            cuda.memcpy_htod_async(slot.device[self._input], host_in[: flat.size], slot.stream)
            if not ctx.execute_async_v3(slot.stream.handle):
                raise InferenceError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            shapes = {}
            for name in self._outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                shapes[name] = shape
                count = int(np.prod(shape))
                cuda.memcpy_dtoh_async(slot.host[name][:count], slot.device[name], slot.stream)
            slot.stream.synchronize()
            maps = slot.host[self._outputs[0]][: int(np.prod(shapes[self._outputs[0]]))].reshape(shapes[self._outputs[0]]).copy()
            scores = slot.host[self._outputs[1]][: int(np.prod(shapes[self._outputs[1]]))].reshape(shapes[self._outputs[1]]).copy()
            return maps, scores
        finally:
            cuda.Context.pop()
            self._slots.put(slot)

    def __del__(self):  # release the primary context we retained
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            try:
                ctx.detach()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def _probe() -> str | None:
    return missing_for_tensorrt()


register_backend(
    BackendSpec(
        name="tensorrt",
        probe=_probe,
        create=lambda path, meta, threads: TensorRTBackend(path, meta),
    )
)

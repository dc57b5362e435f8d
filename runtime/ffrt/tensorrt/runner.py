"""Native TensorRT backend ("tensorrt"): TensorRT + a CUDA host API, no torch, no onnxruntime.

Loads a plan (an ``.engine`` with its sidecar, or builds/reuses a cached plan for an
``.onnx``: see :mod:`ffrt.tensorrt.build`) and runs it on GPU ``device``:

* CUDA through :mod:`ffrt.tensorrt.cudahost` (cuda-python by default, pycuda where installed): the
  device's **primary context** is retained once and pushed/popped around every call, so one
  Detector works from any thread;
* one execution context + one CUDA stream + pinned host buffers + device buffers per
  worker slot; a call takes a free slot (waiting at most ``slot_timeout_s``) and always
  gives it back, so several threads run concurrently up to the number of slots;
* dynamic batch within the plan's optimization profile (``set_input_shape`` per call);
* the name-based tensor API (``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``,
  ``get_tensor_dtype``, ``set_tensor_address``, ``execute_async_v3``);
* every CUDA/TensorRT failure becomes ``BackendUnavailableError`` while starting (so
  ``backend="auto"`` falls back) and ``InferenceError`` while running, saying what to do;
* :meth:`TensorRTBackend.close` (also ``with``, and ``__del__`` as a last resort) releases
  in Polygraphy's order (``TrtRunner.deactivate``): device buffers, pinned host buffers and
  streams, then execution contexts, the engine and the runtime, and the CUDA context last,
  with that context current while anything is freed, so nothing is skipped as belonging to
  a dead context.

API references: TensorRT Python API ICudaEngine / IExecutionContext / Runtime (10.16, 11.4;
checked against both lines' genuine bindings by tests/runtime/test_tensorrt_bindings.py);
the CUDA host API calls are listed in ffrt/tensorrt/cudahost.py.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from .build import cached_plan, import_tensorrt, missing_for_tensorrt

from .plan import check_engine, read_engine_info

from ..errors import BackendUnavailableError, InferenceError, InvalidArgumentError, ModelFileError
from ..meta import ModelMeta
from ..backends.base import Backend, BackendSpec, register_backend

log = logging.getLogger("ffrt")

#: Execution contexts (each with its stream and buffers) per backend: concurrent callers.
DEFAULT_SLOTS = 2
#: How long a call waits for a free slot before it gives up (a slot is always given back;
#: this turns a stuck GPU into an error instead of a hang).
SLOT_TIMEOUT_S = 120.0
#: How often a call waiting for a slot looks whether close() has begun.
CLOSE_POLL_S = 0.05


class _Slot:
    """One execution context, its stream, pinned host and device buffers (sized for max batch)."""

    def __init__(self, trt, cuda, engine, names, max_batch: int):
        self.context = None
        self.stream = None
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        try:
            self._allocate(trt, cuda, engine, names, max_batch)
        except BaseException:
            self.release(cuda)  # a half-built slot frees what it got
            raise

    def _allocate(self, trt, cuda, engine, names, max_batch: int) -> None:
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("TensorRT could not create an execution context (GPU out of memory?)")
        self.stream = cuda.create_stream()
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = list(engine.get_tensor_shape(name))
            shape[0] = max_batch
            if any(d < 0 for d in shape[1:]):
                raise ModelFileError(f"TensorRT tensor {name!r} has a dynamic non-batch dimension {shape}; ffrt plans have only a dynamic batch")
            host = cuda.alloc_pinned(int(np.prod(shape)), dtype)
            self.host[name] = host
            self.device[name] = cuda.alloc(host.nbytes)
            self.context.set_tensor_address(name, int(self.device[name]))

    def release(self, cuda) -> list[str]:
        """Free everything (the CUDA context is current). Returns what could not be freed."""
        failed = []
        if self.stream is not None:
            with contextlib.suppress(Exception):
                cuda.synchronize(self.stream)  # nothing may still read or write the buffers
        for name, ptr in list(self.device.items()):
            try:
                cuda.free(ptr)
            except Exception as e:  # noqa: BLE001 - keep freeing the rest
                failed.append(f"device buffer {name}: {e}")
        self.device.clear()
        for name, host in list(self.host.items()):
            try:
                cuda.free_pinned(host)
            except Exception as e:  # noqa: BLE001
                failed.append(f"pinned buffer {name}: {e}")
        self.host.clear()
        if self.stream is not None:
            try:
                cuda.destroy_stream(self.stream)
            except Exception as e:  # noqa: BLE001
                failed.append(f"stream: {e}")
            self.stream = None
        self.context = None  # the execution context is destroyed here (last reference)
        return failed


class TensorRTBackend(Backend):
    name = "tensorrt"  # concurrent calls are safe: each takes its own slot

    def __init__(self, model_path: Path, meta: ModelMeta, slots: int = DEFAULT_SLOTS, cache_dir=None,
                 device: int = 0, slot_timeout_s: float = SLOT_TIMEOUT_S):
        from .cudahost import CudaError, host_api

        self._init_state(device, slot_timeout_s)
        reason = missing_for_tensorrt(device)
        if reason is not None:
            raise BackendUnavailableError(reason)
        trt = import_tensorrt()
        model_path = Path(model_path)
        try:
            api = host_api()
            gpu = api.device(device)
        except CudaError as e:
            raise BackendUnavailableError(f"no usable NVIDIA GPU {device} ({e})") from e
        if model_path.suffix.lower() == ".onnx":
            plan_path = cached_plan(model_path, meta, cache_dir=cache_dir, log=lambda m: log.info("%s", m), device=device)
        else:
            plan_path = model_path
        info = read_engine_info(plan_path)
        plan = plan_path.read_bytes()
        check_engine(plan_path, plan, info, tensorrt_version=str(trt.__version__),
                     compute_capability=gpu.compute_capability)
        self.info = info
        self.precision = info.precision  # the plan computes what its ONNX encodes (strongly typed)
        self.plan_path = plan_path
        self._meta = meta
        self._open(trt, api, plan, plan_path, meta, slots)

    def _init_state(self, device: int, slot_timeout_s: float) -> None:
        self._cuda = None
        self._slots_all: list[_Slot] = []
        self._closed = False
        self._close_lock = threading.Lock()
        self._engine = self._runtime = None
        self.device = device
        self.slot_timeout_s = float(slot_timeout_s)

    def _open(self, trt, api, plan: bytes, plan_path: Path, meta: ModelMeta, slots: int) -> None:
        """Retain the GPU's context and start TensorRT in it; on any failure free what was made."""
        from .cudahost import CudaError

        self._host_api = api.name
        try:
            self._cuda = api.open(self.device)
            with self._cuda.active():
                self._start(trt, plan, plan_path, meta, slots)
        except CudaError as e:
            self.close()
            raise BackendUnavailableError(f"CUDA failed on GPU {self.device} ({api.name}): {e}") from e
        except BaseException:
            self.close()
            raise

    def _start(self, trt, plan: bytes, plan_path: Path, meta: ModelMeta, slots: int) -> None:
        from . import calls

        self._logger = calls.make_logger(trt)  # the process's one logger; must outlive every TensorRT object
        mark = self._logger.mark()
        self._runtime = calls.create(trt, "Runtime", self._logger, self.device)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            said = self._logger.said(mark)
            raise ModelFileError(f"{plan_path}: TensorRT {trt.__version__} could not deserialize this plan"
                                 + (f" ({said})" if said else "") + "; rebuild it on this machine.")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._check_contract(trt, inputs, outputs)
        self._input = inputs[0]
        self._outputs = (meta.outputs.anomaly_map, meta.outputs.score)
        # Profile 0: the batch range this plan accepts.
        mn, _, mx = self._engine.get_tensor_profile_shape(self._input, 0)
        self.batch_min, self.batch_max = int(mn[0]), int(mx[0])
        self._slots: queue.Queue[_Slot] = queue.Queue()
        for _ in range(max(1, slots)):
            slot = _Slot(trt, self._cuda, self._engine, names, self.batch_max)
            self._slots_all.append(slot)
            self._slots.put(slot)

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
        return (f"TensorRT {self.info.tensorrt_version}", f"{self.info.gpu_name} (device {self.device})",
                self.info.precision, self._host_api)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from .cudahost import CudaError

        if self._closed:
            raise InferenceError("this TensorRT backend is closed; create a new Detector")
        n = int(batch.shape[0])
        if not (self.batch_min <= n <= self.batch_max):
            raise InvalidArgumentError(
                f"batch of {n} is outside this engine's profile {self.batch_min}..{self.batch_max}; "
                "use predict_batch (it splits batches) or rebuild with a larger --batch-max"
            )
        slot = self._take_slot()
        try:
            if self._closed or slot.context is None:
                raise InferenceError("this TensorRT backend is closed; create a new Detector")
            with self._cuda.active():
                return self._run_on(slot, batch)
        except CudaError as e:
            raise InferenceError(f"CUDA failed on GPU {self.device} during inference ({e}); if it persists, check "
                                 "the GPU with nvidia-smi and restart the process") from e
        finally:
            self._slots.put(slot)  # always given back, whatever failed

    def _take_slot(self) -> _Slot:
        """A free slot, waiting at most the slot timeout; a close() that starts meanwhile ends
        the wait at once (it takes the free slots itself, so they would never come back)."""
        deadline = time.monotonic() + self.slot_timeout_s
        while True:
            if self._closed:
                raise InferenceError("this TensorRT backend is closed; create a new Detector")
            left = deadline - time.monotonic()
            if left <= 0:
                raise InferenceError(
                    f"no free TensorRT execution context within {self.slot_timeout_s:.0f} s (every slot busy: the GPU "
                    "may be stuck); check the GPU with nvidia-smi")
            try:
                return self._slots.get(timeout=min(left, CLOSE_POLL_S))
            except queue.Empty:
                continue

    def _run_on(self, slot: _Slot, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cuda = self._cuda
        ctx = slot.context
        if not ctx.set_input_shape(self._input, tuple(batch.shape)):
            raise InferenceError(f"TensorRT rejected input shape {tuple(batch.shape)}")
        host_in = slot.host[self._input]
        flat = np.ascontiguousarray(batch).reshape(-1)
        host_in[: flat.size] = flat
        cuda.htod_async(slot.device[self._input], host_in[: flat.size], slot.stream)
        mark = self._logger.mark()
        if not ctx.execute_async_v3(cuda.stream_handle(slot.stream)):
            said = self._logger.said(mark)
            raise InferenceError("TensorRT execute_async_v3 failed" + (f": {said}" if said else " (see the TensorRT log)"))
        shapes = {}
        for name in self._outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            shapes[name] = shape
            count = int(np.prod(shape))
            cuda.dtoh_async(slot.host[name][:count], slot.device[name], slot.stream)
        cuda.synchronize(slot.stream)
        maps = slot.host[self._outputs[0]][: int(np.prod(shapes[self._outputs[0]]))].reshape(shapes[self._outputs[0]]).copy()
        scores = slot.host[self._outputs[1]][: int(np.prod(shapes[self._outputs[1]]))].reshape(shapes[self._outputs[1]]).copy()
        return maps, scores

    def close(self, timeout_s: float | None = None) -> None:
        """Free every GPU resource (idempotent). Waits up to ``timeout_s`` (default: the slot
        timeout) for calls in flight; later calls raise InferenceError."""
        from .cudahost import CudaError

        with self._close_lock:
            if self._closed and self._cuda is None:
                return
            self._closed = True
            cuda, self._cuda = self._cuda, None
            if cuda is None:
                self._engine = self._runtime = None
                return
            wait = self.slot_timeout_s if timeout_s is None else timeout_s
            slots = getattr(self, "_slots", None)
            idle = []
            if slots is not None:
                for _ in self._slots_all:
                    try:
                        idle.append(slots.get(timeout=wait))
                    except queue.Empty:
                        break
            busy = [s for s in self._slots_all if all(s is not i for i in idle)]
            if busy:
                log.warning("ffrt: closing the TensorRT backend while %d call(s) are still running; their buffers are "
                            "left to the process exit", len(busy))
            failed: list[str] = []
            pushed = False
            try:
                cuda.push()
                pushed = True
            except CudaError as e:
                failed.append(f"context: {e}")
            try:
                if pushed:
                    for slot in (s for s in self._slots_all if s not in busy):
                        failed += slot.release(cuda)
                self._slots_all = busy
                # TensorRT objects after the buffers they used, the CUDA context last.
                self._engine = None
                self._runtime = None
            finally:
                if pushed:
                    with contextlib.suppress(CudaError):
                        cuda.pop()
                if not busy:
                    try:
                        cuda.release()
                    except CudaError as e:
                        failed.append(f"release: {e}")
            if failed:
                log.warning("ffrt: TensorRT backend close: %s", "; ".join(failed))

    def __del__(self):  # a last resort: call close() (or use `with`) to free GPU memory deterministically
        with contextlib.suppress(Exception):
            self.close(timeout_s=0)


def _probe() -> str | None:
    return missing_for_tensorrt()


register_backend(
    BackendSpec(
        name="tensorrt",
        probe=_probe,
        create=lambda path, meta, threads, device=0, **_: TensorRTBackend(path, meta, device=device),
    )
)

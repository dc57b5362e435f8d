"""The CUDA host API the native TensorRT backend needs: one small interface, two implementations.

TensorRT itself allocates nothing for the caller: the backend needs a CUDA context on the
chosen GPU, device buffers, page-locked (pinned) host buffers, streams and asynchronous
copies. That is all this module does, behind :class:`HostApi` / :class:`DeviceContext`:

* :class:`CudaPythonApi` (default): NVIDIA's ``cuda-python`` driver bindings
  (``cuda.bindings.driver``, plain wheels, no CUDA toolkit; what TensorRT's own samples use
  since 10.13/10.14, "Replace all pycuda usages with cuda-python APIs" in the TensorRT OSS
  changelog). Only the driver API is used, so the host needs the NVIDIA driver
  (``libcuda.so.1``) and nothing else.
* :class:`PyCudaApi`: pycuda, the library many teams already know; used when cuda-python is
  not installed or ``FFRT_CUDA_API=pycuda``. pycuda has no wheels: ``pip install
  "ffrt[pycuda]"`` builds it and needs the full CUDA toolkit (``cuda.h``, ``curand.h``).

Both use the device's *primary context* (retained once, pushed/popped around every call),
so a Detector works from any thread and shares the context with anything else in the
process (ONNX Runtime's CUDA provider, PyTorch) instead of creating its own.

API references: CUDA driver API as exposed by cuda-bindings 13.x (``cuInit``,
``cuDeviceGet*``, ``cuDevicePrimaryCtxRetain/Release``, ``cuCtxPushCurrent/PopCurrent``,
``cuMemAlloc/Free``, ``cuMemHostAlloc/FreeHost``, ``cuStreamCreate/Destroy/Synchronize``,
``cuMemcpyHtoDAsync/DtoHAsync``, ``cuMemGetInfo``; every call returns ``(CUresult, *values)``);
pycuda 2026.1 ``pycuda.driver`` (``init``, ``Device.retain_primary_context``, ``Context.push/pop``,
``Context.detach``, ``mem_alloc``, ``pagelocked_empty``, ``Stream``, ``memcpy_htod_async``,
``memcpy_dtoh_async``, ``mem_get_info``). tests/runtime/test_cuda_host.py runs the first
through the genuine cuda-bindings wheel and checks every pycuda name against pycuda's source.

Errors are :class:`CudaError` (a RuntimeError, not an ffrt error): the backend turns them
into ``BackendUnavailableError`` while starting and ``InferenceError`` while running.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import os
import threading
from dataclasses import dataclass

import numpy as np

#: Environment variable that picks the implementation: "cuda-python" or "pycuda".
ENV = "FFRT_CUDA_API"
NAMES = ("cuda-python", "pycuda")
INSTALL_HINT = 'pip install "ffrt[gpu]" (cuda-python), or "ffrt[pycuda]" where the CUDA toolkit is installed'


class CudaError(RuntimeError):
    """A CUDA driver call failed, or no CUDA host API / driver is usable here."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str  # "8.6"
    total_memory: int  # bytes


class DeviceContext(abc.ABC):
    """The retained primary context of one GPU, and what the backend allocates in it.

    Every method except :meth:`push`/:meth:`active` expects the context to be current
    (pushed) on the calling thread.
    """

    device: int

    @abc.abstractmethod
    def push(self) -> None: ...

    @abc.abstractmethod
    def pop(self) -> None: ...

    @contextlib.contextmanager
    def active(self):
        """Push for the duration of a block; pops only if the push succeeded."""
        self.push()
        try:
            yield self
        finally:
            self.pop()

    @abc.abstractmethod
    def alloc(self, nbytes: int) -> int:
        """Device buffer of ``nbytes``; returns its address."""

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def alloc_pinned(self, count: int, dtype) -> np.ndarray:
        """Page-locked host array of ``count`` elements."""

    @abc.abstractmethod
    def free_pinned(self, array: np.ndarray) -> None:
        """Frees a pinned array; the caller drops every reference to it."""

    @abc.abstractmethod
    def create_stream(self) -> object: ...

    @abc.abstractmethod
    def stream_handle(self, stream) -> int:
        """The ``cudaStream_t`` value TensorRT's ``execute_async_v3`` takes."""

    @abc.abstractmethod
    def synchronize(self, stream) -> None: ...

    @abc.abstractmethod
    def destroy_stream(self, stream) -> None: ...

    @abc.abstractmethod
    def htod_async(self, dst: int, src: np.ndarray, stream) -> None: ...

    @abc.abstractmethod
    def dtoh_async(self, dst: np.ndarray, src: int, stream) -> None: ...

    @abc.abstractmethod
    def mem_info(self) -> tuple[int, int]:
        """(free, total) device memory in bytes."""

    @abc.abstractmethod
    def release(self) -> None:
        """Release the retained primary context (must not be current). Idempotent."""


class HostApi(abc.ABC):
    name: str = ""
    version: str = ""

    @abc.abstractmethod
    def driver_version(self) -> str:
        """The CUDA version the driver supports, e.g. "13.0"."""

    @abc.abstractmethod
    def device_count(self) -> int: ...

    @abc.abstractmethod
    def device(self, index: int) -> DeviceInfo: ...

    @abc.abstractmethod
    def open(self, index: int) -> DeviceContext:
        """Retain GPU ``index``'s primary context (not pushed)."""

    def check_index(self, index: int) -> None:
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise CudaError(f"device must be a GPU index >= 0, not {index!r}")
        count = self.device_count()
        if count == 0:
            raise CudaError("the NVIDIA driver reports no GPU")
        if index >= count:
            raise CudaError(f"device {index} does not exist: this machine has {count} GPU(s) (0..{count - 1})")


# -- cuda-python (cuda.bindings.driver) -----------------------------------------------------


class CudaPythonApi(HostApi):
    name = "cuda-python"

    def __init__(self):
        from cuda.bindings import driver  # noqa: PLC0415

        try:
            import cuda.bindings as bindings  # noqa: PLC0415

            self.version = str(getattr(bindings, "__version__", "?"))
        except Exception:  # noqa: BLE001
            self.version = "?"
        self._cu = driver
        self._init_lock = threading.Lock()
        self._initialized = False

    def call(self, fn: str, *args):
        """``driver.fn(*args)``; raises CudaError unless CUDA_SUCCESS; returns the values."""
        self._init()
        return self._raw(fn, *args)

    def _raw(self, fn: str, *args):
        cu = self._cu
        try:
            result = getattr(cu, fn)(*args)
        except CudaError:
            raise
        except Exception as e:  # the driver library missing, a symbol missing in an old driver
            raise CudaError(_driver_load_message(e)) from e
        err, values = result[0], result[1:]
        if err != cu.CUresult.CUDA_SUCCESS:
            raise CudaError(f"{fn} failed: {self._error_text(err)}")
        return values[0] if len(values) == 1 else values

    def _error_text(self, err) -> str:
        cu = self._cu
        try:
            name = cu.cuGetErrorName(err)[1].decode()
            desc = cu.cuGetErrorString(err)[1].decode()
            return f"{name} ({desc})"
        except Exception:  # noqa: BLE001
            return str(err)

    def _init(self) -> None:
        if self._initialized:
            return
        with self._init_lock:
            if not self._initialized:
                self._raw("cuInit", 0)
                self._initialized = True

    def driver_version(self) -> str:
        v = int(self.call("cuDriverGetVersion"))
        return f"{v // 1000}.{v % 1000 // 10}"

    def device_count(self) -> int:
        return int(self.call("cuDeviceGetCount"))

    def device(self, index: int) -> DeviceInfo:
        self.check_index(index)
        cu = self._cu
        dev = self.call("cuDeviceGet", index)
        name = self.call("cuDeviceGetName", 256, dev)
        name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
        attr = cu.CUdevice_attribute
        major = int(self.call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
        minor = int(self.call("cuDeviceGetAttribute", attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
        total = int(self.call("cuDeviceTotalMem", dev))
        return DeviceInfo(index, name, f"{major}.{minor}", total)

    def open(self, index: int) -> DeviceContext:
        self.check_index(index)
        return _CudaPythonContext(self, index)


class _CudaPythonContext(DeviceContext):
    def __init__(self, api: CudaPythonApi, index: int):
        self._api = api
        self.device = index
        self._dev = api.call("cuDeviceGet", index)
        self._ctx = api.call("cuDevicePrimaryCtxRetain", self._dev)
        self._released = False

    def push(self) -> None:
        self._api.call("cuCtxPushCurrent", self._ctx)

    def pop(self) -> None:
        self._api.call("cuCtxPopCurrent")

    def alloc(self, nbytes: int) -> int:
        return int(self._api.call("cuMemAlloc", max(1, int(nbytes))))

    def free(self, ptr: int) -> None:
        self._api.call("cuMemFree", self._api._cu.CUdeviceptr(int(ptr)))

    def alloc_pinned(self, count: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(1, int(count) * dtype.itemsize)
        ptr = int(self._api.call("cuMemHostAlloc", nbytes, 0))
        buf = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype, count=int(count))

    def free_pinned(self, array: np.ndarray) -> None:
        self._api.call("cuMemFreeHost", int(array.ctypes.data))

    def create_stream(self):
        return self._api.call("cuStreamCreate", 0)

    def stream_handle(self, stream) -> int:
        return int(stream)

    def synchronize(self, stream) -> None:
        self._api.call("cuStreamSynchronize", stream)

    def destroy_stream(self, stream) -> None:
        self._api.call("cuStreamDestroy", stream)

    def htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        cu = self._api._cu
        self._api.call("cuMemcpyHtoDAsync", cu.CUdeviceptr(int(dst)), int(src.ctypes.data), int(src.nbytes), stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        cu = self._api._cu
        self._api.call("cuMemcpyDtoHAsync", int(dst.ctypes.data), cu.CUdeviceptr(int(src)), int(dst.nbytes), stream)

    def mem_info(self) -> tuple[int, int]:
        free, total = self._api.call("cuMemGetInfo")
        return int(free), int(total)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._api.call("cuDevicePrimaryCtxRelease", self._dev)


# -- pycuda --------------------------------------------------------------------------------


class PyCudaApi(HostApi):
    name = "pycuda"

    def __init__(self):
        import pycuda  # noqa: PLC0415
        import pycuda.driver as drv  # noqa: PLC0415

        self.version = str(getattr(pycuda, "VERSION_TEXT", "?"))
        self._drv = drv
        self._initialized = False

    def call(self, fn, *args):
        if not self._initialized:
            self._wrap(self._drv.init)
            self._initialized = True
        return self._wrap(fn, *args)

    def _wrap(self, fn, *args):
        try:
            return fn(*args)
        except self._drv.Error as e:  # pycuda.driver.Error: every CUDA failure
            raise CudaError(f"{getattr(fn, '__name__', fn)} failed: {e}") from e

    def driver_version(self) -> str:
        v = int(self.call(self._drv.get_driver_version))
        return f"{v // 1000}.{v % 1000 // 10}"

    def device_count(self) -> int:
        return int(self.call(self._drv.Device.count))

    def device(self, index: int) -> DeviceInfo:
        self.check_index(index)
        d = self.call(self._drv.Device, index)
        major, minor = d.compute_capability()
        return DeviceInfo(index, str(d.name()), f"{major}.{minor}", int(d.total_memory()))

    def open(self, index: int) -> DeviceContext:
        self.check_index(index)
        return _PyCudaContext(self, index)


class _PyCudaContext(DeviceContext):
    def __init__(self, api: PyCudaApi, index: int):
        self._api = api
        self._drv = api._drv
        self.device = index
        self._ctx = api.call(lambda: self._drv.Device(index).retain_primary_context())
        self._allocs: dict[int, object] = {}  # address -> DeviceAllocation (pycuda frees on .free())
        self._released = False

    def push(self) -> None:
        self._api.call(self._ctx.push)

    def pop(self) -> None:
        self._api.call(self._drv.Context.pop)

    def alloc(self, nbytes: int) -> int:
        a = self._api.call(self._drv.mem_alloc, max(1, int(nbytes)))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        a = self._allocs.pop(int(ptr))
        self._api.call(a.free)

    def alloc_pinned(self, count: int, dtype) -> np.ndarray:
        return self._api.call(self._drv.pagelocked_empty, int(count), np.dtype(dtype))

    def free_pinned(self, array: np.ndarray) -> None:
        base = array.base
        while base is not None and not hasattr(base, "free"):
            base = getattr(base, "base", None)
        if base is not None:
            self._api.call(base.free)

    def create_stream(self):
        return self._api.call(self._drv.Stream)

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def synchronize(self, stream) -> None:
        self._api.call(stream.synchronize)

    def destroy_stream(self, stream) -> None:
        # pycuda has no explicit destroy: its Stream destroys the CUDA stream when collected,
        # in its own context. The backend drops the last reference while the context is current.
        self._api.call(stream.synchronize)

    def htod_async(self, dst: int, src: np.ndarray, stream) -> None:
        self._api.call(self._drv.memcpy_htod_async, self._allocs.get(int(dst), int(dst)), src, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream) -> None:
        self._api.call(self._drv.memcpy_dtoh_async, dst, self._allocs.get(int(src), int(src)), stream)

    def mem_info(self) -> tuple[int, int]:
        free, total = self._api.call(self._drv.mem_get_info)
        return int(free), int(total)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._api.call(self._ctx.detach)


# -- choosing one ------------------------------------------------------------------------------


_CLASSES = {"cuda-python": CudaPythonApi, "pycuda": PyCudaApi}
_MODULES = {"cuda-python": "cuda.bindings.driver", "pycuda": "pycuda.driver"}
_instances: dict[str, HostApi] = {}
_lock = threading.Lock()


def _driver_load_message(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if "DynamicLibNotFoundError" in type(e).__name__ or "libcuda" in text or "driver library" in text:
        return f"no NVIDIA driver here (libcuda.so.1 could not be loaded: {text}); install the NVIDIA driver (R580 or newer)"
    return f"{type(e).__name__}: {text}"


def preferred() -> tuple[str, ...]:
    """Implementation names in the order they are tried (``FFRT_CUDA_API`` first if set)."""
    want = os.environ.get(ENV, "").strip().lower()
    if want in NAMES:
        return (want,) + tuple(n for n in NAMES if n != want)
    return NAMES


def host_api(name: str | None = None) -> HostApi:
    """The CUDA host API to use (cached). Raises CudaError naming what to install."""
    names = (name,) if name else preferred()
    problems = []
    for n in names:
        if n not in _CLASSES:
            raise CudaError(f"unknown CUDA host API {n!r}; choose one of {', '.join(NAMES)}")
        with _lock:
            if n in _instances:
                return _instances[n]
            try:
                api = _CLASSES[n]()
            except ImportError as e:
                problems.append(f"{n} is not installed ({e})")
                continue
            except Exception as e:  # noqa: BLE001 - e.g. pycuda built against another CUDA
                problems.append(f"{n} does not load: {_driver_load_message(e)}")
                continue
            _instances[n] = api
            return api
    raise CudaError("no CUDA host API: " + "; ".join(problems) + f"; {INSTALL_HINT}")


def installed() -> dict[str, str | None]:
    """Version of each implementation's package, None where absent (no import of the driver)."""
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for n, dist in (("cuda-python", "cuda-bindings"), ("pycuda", "pycuda")):
        try:
            out[n] = md.version(dist)
        except md.PackageNotFoundError:
            out[n] = None
    return out

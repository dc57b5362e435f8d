"""Every call ffrt makes into the TensorRT Python API, in one place.

What happens here, and why:

* **One logger that records, read per thread.** TensorRT reports why it failed through its
  logger, then returns None/nullptr. It keeps a single logger pointer per process: a logger
  passed to a later Builder or Runtime is ignored while an earlier one lives (NVIDIA/TensorRT
  issue 1475, TensorRT's own warning). So :func:`make_logger` returns the process's one
  recording logger; it forwards warnings and errors to the ``ffrt`` logger and keeps each with
  the thread that logged it, and an error quotes only what TensorRT said in the failing
  thread since that call began (``mark()`` / ``said(since)``), never another build's or
  another thread's messages.
* **Failed initialisation.** Without a usable GPU/driver, ``trt.Builder(logger)`` and
  ``trt.Runtime(logger)`` raise ``TypeError: pybind11::init(): factory function returned
  nullptr`` after logging "CUDA initialization failure with error: N" (NVIDIA/TensorRT
  issues 2913, 308, 635). :func:`create` turns that into a ``BackendUnavailableError`` that
  says what to check, so ``backend="auto"`` falls back and the CLIs print one line.
* **Precision comes from the ONNX.** Networks are strongly typed (TensorRT 10: the
  ``STRONGLY_TYPED`` creation flag; 11: always, the flag is deprecated and ignored), and
  ``BuilderFlag.TF32`` is cleared: the 10.16 and 11.4 bindings document TF32 as "Enabled by
  default", which would make an FP32 tensor's matrix products TF32 on Ampere and newer.
  The sidecar records ``tf32: false``.
* **Timing cache**, one file per TensorRT version and GPU (a cache from another version or
  GPU is useless, and one shared file would be overwritten by whichever build finished
  last): read under a lock, attached with ``set_timing_cache`` (its bool result checked: a
  rejected file is set aside and a fresh cache used), and after the build merged with what
  other builds wrote meanwhile (``ITimingCache.combine``) and written back atomically under
  the lock. ``get_timing_cache()`` may return None: then nothing is written.
* **Buildability**: :func:`ffrt.tensorrt.compat.check` refuses a graph TensorRT cannot build
  (an operator or type the ONNX parser lacks, uint8 not into a Cast, TopK K > 3839, ...)
  before any TensorRT call, with one line.

API used (checked against the genuine 10.16 and 11.4 bindings by
tests/runtime/test_tensorrt_bindings.py): Logger/ILogger, Builder, Runtime,
NetworkDefinitionCreationFlag, OnnxParser (parse, num_errors, get_error),
create_builder_config, BuilderFlag.TF32, clear_flag/get_flag, set_memory_pool_limit,
MemoryPoolType.WORKSPACE, create_optimization_profile/set_shape/add_optimization_profile,
create_timing_cache/set_timing_cache/get_timing_cache, ITimingCache.combine/serialize,
build_serialized_network, deserialize_cuda_engine and the name-based tensor API.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from pathlib import Path

from ..errors import BackendUnavailableError

log = logging.getLogger("ffrt")

#: What to check when TensorRT cannot initialise CUDA.
INIT_HINT = (
    "check that the NVIDIA driver is installed and supports this TensorRT's CUDA (R580 or newer for the CUDA 13 "
    "wheels of the gpu extra; 'ffrt doctor' prints what this machine has), that the GPU is visible "
    "(CUDA_VISIBLE_DEVICES, docker --gpus all) and not out of memory"
)


_LOGGERS: dict[int, object] = {}
_LOGGERS_LOCK = threading.Lock()
#: Messages kept, across all threads (enough for every thread's last few).
_KEPT = 200


def make_logger(trt):
    """The process's one ``trt.ILogger`` for this TensorRT module: forwards WARNING and worse to
    the ``ffrt`` logger and keeps each message with its thread (read with ``mark``/``said``)."""
    with _LOGGERS_LOCK:
        existing = _LOGGERS.get(id(trt))
        if existing is None:
            existing = _LOGGERS[id(trt)] = _recording_logger(trt)
        return existing


def _recording_logger(trt):
    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self._lock = threading.Lock()
            self._seq = 0
            self._messages: list[tuple[int, int, str]] = []  # (sequence number, thread id, text)

        def log(self, severity, msg):  # called by TensorRT, from any thread
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                text = str(msg)
                with self._lock:
                    self._seq += 1
                    self._messages.append((self._seq, threading.get_ident(), text))
                    del self._messages[:-_KEPT]
                log.warning("TensorRT: %s", text)

        def mark(self) -> int:
            """A point in the log; ``said(since=mark)`` reads only what came after it."""
            with self._lock:
                return self._seq

        def said(self, since: int = 0) -> str:
            """The last distinct messages TensorRT logged in this thread after ``since``."""
            me = threading.get_ident()
            with self._lock:
                mine = [text for seq, thread, text in self._messages if seq > since and thread == me]
            return "; ".join(dict.fromkeys(mine[-5:]))

    return _Logger()


def create(trt, factory: str, logger, device: int):
    """``trt.Builder(logger)`` / ``trt.Runtime(logger)`` with a failed start made explicit."""
    mark = logger.mark()
    try:
        obj = getattr(trt, factory)(logger)
    except TypeError as e:
        raise BackendUnavailableError(init_failure(trt, factory, logger, device, e, mark)) from e
    if obj is None:
        raise BackendUnavailableError(init_failure(trt, factory, logger, device, None, mark))
    return obj


def init_failure(trt, factory: str, logger, device: int, error, since: int = 0) -> str:
    said = logger.said(since) if hasattr(logger, "said") else ""
    detail = f"TensorRT said: {said}" if said else f"{type(error).__name__}: {error}" if error else "it returned None"
    return (f"TensorRT {getattr(trt, '__version__', '?')} could not initialise CUDA on GPU {device} "
            f"(trt.{factory} failed; {detail}); {INIT_HINT}")


# -- timing cache ----------------------------------------------------------------------------


def timing_cache_file(base: str | os.PathLike, tensorrt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """The timing cache for this TensorRT and GPU, derived from ``base`` (a file name or folder).

    ``DIR/timing.cache`` -> ``DIR/timing.trt10.16.1.11.sm86.nvidia-rtx-a2000.cache``.
    """
    base = Path(base)
    if base.is_dir():
        base = base / "timing.cache"
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    cc = compute_capability.replace(".", "")
    return base.with_name(f"{base.stem}.trt{tensorrt_version}.sm{cc}.{slug}{base.suffix or '.cache'}")


@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive advisory lock on ``path`` + ".lock" (POSIX flock; elsewhere no lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+b") as f:
        try:
            import fcntl  # noqa: PLC0415
        except ImportError:  # Windows: no advisory lock here; the write itself stays atomic
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def attach_timing_cache(config, path: Path | None, log_fn=print):
    """Attach the cache in ``path`` (or a fresh one) to ``config``; returns the ITimingCache.

    A file this TensorRT rejects (another version/GPU, corrupt) is renamed ``*.rejected``
    and a fresh cache is used: a bad cache must not fail a build.
    """
    blob = b""
    if path is not None and path.is_file():
        with file_lock(path):
            blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    ok = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    if not ok and blob:
        log_fn(f"timing cache: {path} was rejected by this TensorRT/GPU; it is set aside as "
               f"{path.name}.rejected and a fresh cache is used")
        with contextlib.suppress(OSError):
            path.replace(path.with_name(path.name + ".rejected"))
        cache = config.create_timing_cache(b"")
        ok = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    if not ok:
        log_fn("timing cache: TensorRT refused a fresh timing cache; building without one")
        return None
    if path is not None:
        log_fn(f"timing cache: {'reusing' if blob else 'creating'} {path}")
    return cache


def save_timing_cache(config, path: Path | None, log_fn=print) -> bool:
    """Merge what this build measured into ``path`` (under its lock); returns whether written."""
    from ffcore.files import atomic_write_bytes

    if path is None:
        return False
    cache = config.get_timing_cache()
    if cache is None:  # documented: None if no timing cache is set
        return False
    with file_lock(path):
        if path.is_file():
            other_blob = path.read_bytes()
            if other_blob:
                other = config.create_timing_cache(other_blob)
                # combine() skips (False) a cache of another TensorRT version: ours replaces it.
                if other is None or not cache.combine(other, False):
                    log_fn(f"timing cache: {path} could not be merged (another TensorRT or GPU wrote it); replacing it")
        data = bytes(cache.serialize())
        if not data:
            return False
        atomic_write_bytes(path, data)
    return True

"""TensorRT plans: the engine cache and the build (the plan's sidecar, key, profile and
checks are in :mod:`ffrt.tensorrt.plan`, re-exported here).

A serialized TensorRT plan only runs on the TensorRT version and the GPU architecture
it was built for, and silently describes nothing about the ONNX it came from. So every
plan ffrt writes gets a sidecar ``<plan>.json`` (:class:`EngineInfo`): TensorRT version,
GPU name and compute capability, the hash of the source ONNX's graph (:func:`graph_sha256`)
and the source's path, sha256 of the plan itself, the precision, the batch profile, and a
copy of the model's :class:`~ffrt.meta.ModelMeta`. A plan whose sidecar is missing, or
disagrees with this machine or with the ONNX it is supposed to come from, is refused
(explicit .engine) or rebuilt (engine cache), never run.

The graph, not the file: thresholds are metadata (``metadata_props``) that
``ffcalib thresholds`` rewrites on the line PC, and they do not change one weight of the
plan. So plans are tied to the graph's hash (the ONNX without its metadata, serialized
deterministically), and thresholds are read from the ONNX at load:

* Engine cache (``Detector("model.onnx", backend="tensorrt")`` and the ONNX Runtime
  TensorRT EP): key = graph hash + TensorRT version + GPU (name and compute capability) +
  precision + batch profile (:class:`CacheKey`); re-tuned thresholds keep the key, so no
  rebuild. After a build, entries of the same source ONNX path under any other key, and
  temp files a kill left behind, are pruned (:func:`prune_cache`): one plan per model.
* Explicit ``.engine``: the source of truth for thresholds is the ONNX next to it
  (:func:`engine_meta`): when its graph hash is the one the sidecar records, its metadata
  (thresholds, score statistics) is used; another graph there is refused; with no ONNX
  next to it the sidecar's copy, frozen at build time, is used and a warning says so.

Nothing here imports torch; ``tensorrt`` and the CUDA host API (:mod:`ffrt.tensorrt.cudahost`:
cuda-python or pycuda) are imported only inside the functions that need a GPU, so the cache
and metadata logic is testable on any machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ffcore.nvidia_smi import NvidiaSmiError, query_gpus

from .plan import BatchProfile, CacheKey, EngineInfo, check_engine, graph_sha256, read_engine_info, sidecar_path, write_engine
from ..errors import BackendUnavailableError, EngineMismatchError, ModelFileError
from ..meta import ModelMeta

CACHE_ENV = "FFRT_ENGINE_CACHE"
DEFAULT_WORKSPACE_MB = 1024
INSTALL_GPU = 'pip install "ffrt[gpu]"'


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ffrt" / "engines"


# -- GPU / TensorRT facts of this machine ---------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"


def import_tensorrt():
    """The TensorRT Python module, or BackendUnavailableError saying what is missing.

    ``tensorrt`` is what the ``tensorrt-cu13`` package installs (a thin module over
    ``tensorrt_bindings``); a bindings-only install is accepted too. The bindings load the
    native libraries (libnvinfer.so.N, from the ``tensorrt-cu13-libs`` wheel) on import: a
    missing or mismatched library is an OSError/ImportError naming the file.
    """
    errors = []
    for name in ("tensorrt", "tensorrt_bindings"):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name not in (name, name.split(".")[0]):
                errors.append(f"{name}: {e}")
            continue
        except (ImportError, OSError) as e:
            errors.append(f"{name}: {' '.join(str(e).split())}")
    if errors:
        raise BackendUnavailableError(
            f"the TensorRT Python bindings are installed but do not load ({'; '.join(errors)}); reinstall them with "
            f"their libraries: {INSTALL_GPU}")
    raise BackendUnavailableError(f"TensorRT is not installed (no importable 'tensorrt'; {INSTALL_GPU})")


def tensorrt_version() -> str | None:
    """Version of the importable TensorRT bindings, or None."""
    try:
        return str(import_tensorrt().__version__)
    except BackendUnavailableError:
        return None


def gpu_info(device: int = 0) -> GpuInfo | None:
    """Name and compute capability of GPU ``device`` (the CUDA host API, else nvidia-smi), or None."""
    from .cudahost import CudaError, host_api

    try:
        d = host_api().device(device)
        return GpuInfo(d.name, d.compute_capability)
    except CudaError:
        pass
    try:
        gpus = query_gpus(("name", "compute_cap"), device)
    except NvidiaSmiError:
        return None
    if not gpus or not gpus[0]["compute_cap"]:
        return None
    return GpuInfo(gpus[0]["name"], gpus[0]["compute_cap"])


def missing_for_tensorrt(device: int = 0) -> str | None:
    """None when TensorRT, a CUDA host API and GPU ``device`` are usable here, else one
    sentence naming what is missing (and what to install)."""
    from .cudahost import CudaError, host_api

    try:
        import_tensorrt()
    except BackendUnavailableError as e:
        return str(e)
    try:
        api = host_api()
    except CudaError as e:
        return str(e)
    try:
        api.device(device)
    except CudaError as e:
        return f"no usable NVIDIA GPU ({api.name}: {e})"
    return None


# -- cache key ----------------------------------------------------------------------------


def cache_key(graph: str, meta: ModelMeta, tensorrt_version: str, gpu: GpuInfo, profile: "BatchProfile") -> CacheKey:
    """The key of the plan for a graph (see :func:`graph_sha256`) on this TensorRT and GPU."""
    return CacheKey(graph, tensorrt_version, gpu.name, gpu.compute_capability, meta.precision,
                    (profile.min, profile.opt, profile.max))


# -- build (needs TensorRT and a GPU) -----------------------------------------------------


class EngineBuildError(BackendUnavailableError):
    """TensorRT could not build a plan (parser errors, unsupported layer, out of memory)."""


def build_plan(
    onnx_path: str | os.PathLike,
    meta: ModelMeta,
    profile: BatchProfile,
    workspace_mb: int | None = DEFAULT_WORKSPACE_MB,
    timing_cache: str | os.PathLike | None = None,
    log=print,
    device: int = 0,
) -> tuple[bytes, EngineInfo]:
    """Parse the ONNX into a strongly typed network and build a serialized plan on GPU ``device``.

    Precision comes from the ONNX (FP16 tensors, Q/DQ nodes): no FP16/INT8 builder flags,
    which TensorRT 10 deprecates and 11 removes, and TF32 cleared (:mod:`ffrt.tensorrt.calls`).
    ``timing_cache``: a file name or folder; the file actually used is per TensorRT version
    and GPU (:func:`ffrt.tensorrt.calls.timing_cache_file`). API references: TensorRT Python API
    Builder / IBuilderConfig / OnnxParser / ITimingCache, 10.16 and 11.4
    (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html);
    checked against both lines' genuine bindings in tests/runtime/test_tensorrt_bindings.py.
    """
    from . import calls, compat
    from .cudahost import CudaError, host_api

    onnx_path = Path(onnx_path)
    data = onnx_path.read_bytes()
    found = compat.problems(data)
    if found:
        raise EngineBuildError(compat.refusal(str(onnx_path), found))
    reason = missing_for_tensorrt(device)
    if reason is not None:
        raise BackendUnavailableError(reason)
    trt = import_tensorrt()
    try:
        api = host_api()
        gpu = api.device(device)
        ctx = api.open(device)
    except CudaError as e:
        raise BackendUnavailableError(f"no usable NVIDIA GPU {device} ({e})") from e
    cache_path = (calls.timing_cache_file(timing_cache, str(trt.__version__), gpu.name, gpu.compute_capability)
                  if timing_cache else None)
    try:
        with ctx.active():
            plan, tf32 = _build(trt, calls, onnx_path, data, meta, profile, workspace_mb, cache_path, log, device)
    except CudaError as e:
        raise BackendUnavailableError(f"CUDA failed on GPU {device} while building the engine ({e})") from e
    finally:
        with contextlib.suppress(CudaError):
            ctx.release()
    info = EngineInfo(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        graph_sha256=graph_sha256(data),
        source_onnx=str(onnx_path.resolve()),
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        precision=meta.precision,
        profile=profile,
        workspace_mb=workspace_mb,
        strongly_typed=True,
        tf32=tf32,
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # The plan accepts profile.max at most: the Detector chunks batches by meta.batch_max.
        meta=meta.model_copy(update={"batch_max": profile.max}),
    )
    return plan, info


def _build(trt, calls, onnx_path: Path, data: bytes, meta: ModelMeta, profile: BatchProfile,
           workspace_mb: int | None, cache_path: Path | None, log, device: int) -> tuple[bytes, bool]:
    """The TensorRT calls of a build (the device's context is current). Returns (plan, tf32)."""
    logger = calls.make_logger(trt)
    mark = logger.mark()
    builder = calls.create(trt, "Builder", logger, device)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:  # TensorRT 10; 11 keeps the (ignored) flag for compatibility
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data next to the file; our ONNX is one file, so
    # parse(bytes) is equivalent and keeps the sha256 we record tied to what was parsed.
    if not parser.parse(data, str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"{onnx_path}: TensorRT {trt.__version__} could not parse the ONNX ({len(errors)} error(s)):\n"
            + "\n".join(f"  [{i}] {e}" for i, e in enumerate(errors))
        )
    config = builder.create_builder_config()
    # FP32 tensors stay FP32: TF32 is on by default in every builder config (10.16/11.4 docs).
    config.clear_flag(trt.BuilderFlag.TF32)
    tf32 = bool(config.get_flag(trt.BuilderFlag.TF32))
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    mn, op, mx = profile.shapes(meta)
    opt_profile.set_shape(meta.input.name, mn, op, mx)
    config.add_optimization_profile(opt_profile)
    timing = calls.attach_timing_cache(config, cache_path, log)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        said = logger.said(mark)
        raise EngineBuildError(f"{onnx_path}: TensorRT {trt.__version__} failed to build the engine"
                               + (f" ({said})" if said else " (see its log above)") + ".")
    plan = bytes(plan)
    if timing is not None:
        calls.save_timing_cache(config, cache_path, log)
    return plan, tf32


def lookup_cached_plan(onnx_path: str | os.PathLike, meta: ModelMeta, cache_dir: str | os.PathLike,
                       tensorrt_version: str, gpu: GpuInfo, profile: BatchProfile) -> tuple[Path, str | None]:
    """(the cache entry for this ONNX's graph here, None if it holds a usable plan else why not).

    Needs no TensorRT: the key and the sidecar checks are plain files and hashes.
    """
    graph = graph_sha256(onnx_path)
    key = cache_key(graph, meta, tensorrt_version, gpu, profile)
    plan_path = Path(cache_dir) / key.filename(Path(onnx_path).stem.split(".")[0])
    if not plan_path.is_file():
        return plan_path, "no plan cached for this graph, TensorRT, GPU, precision and batch profile"
    try:
        info = read_engine_info(plan_path)
        check_engine(plan_path, plan_path.read_bytes(), info, tensorrt_version=tensorrt_version,
                     compute_capability=gpu.compute_capability, graph_sha256=graph, precision=meta.precision,
                     profile=profile)
    except ModelFileError as e:
        return plan_path, str(e)
    return plan_path, None


#: A temp file in the cache older than this was left by a killed write (a write takes seconds).
STALE_TMP_AGE_S = 600


def prune_cache(cache_dir: str | os.PathLike, keep: str | os.PathLike, source_onnx: str,
                stale_tmp_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Bound the cache: one plan per source ONNX, no temp files from killed writes.

    Removes every other plan (and its sidecar) built from the same source path (another
    graph after a re-export, another TensorRT or profile), and ``.tmp`` files older than
    ``stale_tmp_age_s``. Plans of other models are kept: two stations' ``model.onnx`` in
    different folders share the default cache without evicting each other. Returns what
    was removed.
    """
    cache_dir, keep = Path(cache_dir), Path(keep)
    removed: list[Path] = []
    for plan in sorted(cache_dir.glob("*.engine")):
        if plan.name == keep.name:
            continue
        try:
            source = json.loads(sidecar_path(plan).read_text()).get("source_onnx")
        except (OSError, ValueError, AttributeError):
            continue  # not ours to judge
        if source == source_onnx:
            for f in (plan, sidecar_path(plan)):
                f.unlink(missing_ok=True)
                removed.append(f)
    now = dt.datetime.now().timestamp()
    for tmp in cache_dir.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > stale_tmp_age_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
    return removed


def cached_plan(
    onnx_path: str | os.PathLike,
    meta: ModelMeta,
    cache_dir: str | os.PathLike | None = None,
    profile: BatchProfile | None = None,
    rebuild_mismatched: bool = True,
    log=print,
    device: int = 0,
) -> Path:
    """Path of a plan for this ONNX's graph on GPU ``device``, building it on the first call.

    A cached plan whose sidecar disagrees (another graph, TensorRT, GPU, precision or
    profile, or a modified plan) is rebuilt when ``rebuild_mismatched`` else refused; never
    run. Re-tuned thresholds do not change the graph: the cached plan is reused.
    """
    reason = missing_for_tensorrt(device)
    if reason is not None:
        raise BackendUnavailableError(reason)
    gpu = gpu_info(device)
    profile = profile or BatchProfile.for_model(meta)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    plan_path, miss = lookup_cached_plan(onnx_path, meta, cache_dir, tensorrt_version(), gpu, profile)
    if miss is None:
        return plan_path
    if plan_path.is_file():
        if not rebuild_mismatched:
            raise EngineMismatchError(miss)
        log(f"ffrt: rebuilding cached engine: {miss}")
    plan, info = build_plan(onnx_path, meta, profile, timing_cache=cache_dir / "timing.cache", log=log, device=device)
    write_engine(plan_path, plan, info)
    for gone in prune_cache(cache_dir, plan_path, info.source_onnx):
        log(f"ffrt: engine cache: removed {gone.name}")
    return plan_path



"""ONNX Runtime's TensorRT execution provider, as far as TensorRT is concerned: the libnvinfer its
provider library links and loads, its provider options, and its engine-cache folders keyed like
ffrt's own plans (the backend itself is ffrt.backends.onnxruntime's ``onnxruntime-tensorrt``).

ONNX Runtime's TensorRT provider has no TF32 option and keeps TensorRT's default (TF32 on), while
ffrt's native engines clear it: their FP32 outputs differ by TF32 rounding (docs/gpu.md; measured
by scripts/gpu/check_tensorrt.py).
"""

from __future__ import annotations

from pathlib import Path

from ..meta import ModelMeta


def ort_trt_library(ort=None) -> dict:
    """What ONNX Runtime's TensorRT provider will run on: the libnvinfer soname its provider
    library links (from its DT_NEEDED entries), and the version and file of that library as
    this process loads it (``getInferLibVersion()``: major*10000 + minor*100 + patch).

    Keys: ``provider`` (path or None), ``soname`` (e.g. "libnvinfer.so.10" or None),
    ``version`` (e.g. "10.16.1" or None), ``path`` (the loaded file or None).
    """
    from ..backends import onnxruntime as ort_backend
    from ..errors import BackendUnavailableError
    from . import libprobe

    out = {"provider": None, "soname": None, "version": None, "path": None}
    try:
        ort = ort or ort_backend._import_ort()
    except BackendUnavailableError:
        return out
    capi = Path(ort.__file__).parent / "capi"
    provider = next(iter(sorted(capi.glob("libonnxruntime_providers_tensorrt.so*"))), None)
    if provider is None:
        return out
    out["provider"] = str(provider)
    soname = next((n for n in libprobe.needed(provider) if n.startswith("libnvinfer.so.")), None)
    out["soname"] = soname
    if soname is None:
        return out
    ort_backend.prepare_gpu_libraries(ort)
    lib = libprobe.load(soname)
    if lib is None:
        return out
    try:
        v = int(lib.getInferLibVersion())
    except (AttributeError, OSError):
        return out
    out["version"] = f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    out["path"] = libprobe.loaded_path(soname)
    return out


def _trt_library_version() -> str | None:
    """Version of the libnvinfer ONNX Runtime's TensorRT provider loads, or None."""
    return ort_trt_library()["version"]


def trt_ep_options(model_path: Path, meta: ModelMeta, cache_root: Path | None = None,
                   device: int = 0) -> tuple[dict, Path]:
    """TensorRT EP provider options, with ORT's engine cache in a folder keyed like ours.

    The folder is named by :class:`ffrt.tensorrt.build.CacheKey` (graph sha256 + TensorRT version +
    GPU + precision + batch profile), where the TensorRT version is that of the libnvinfer
    the provider itself loads (:func:`ort_trt_library`), not of the Python ``tensorrt``
    package, so ORT never finds a plan built for another graph,
    TensorRT or GPU there (ORT's own cache does not check the TensorRT version), and
    re-tuned thresholds (metadata only) keep the folder: no rebuild.
    FP16/INT8 flags stay off: precision comes from the ONNX, and with both off ORT builds
    strongly typed networks (microsoft/onnxruntime PR 24298).
    Options: https://onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html
    (trt_engine_cache_enable/_path, trt_timing_cache_enable/_path, trt_max_workspace_size,
    trt_profile_min/opt/max_shapes; its Python example passes booleans, which
    onnxruntime's check_and_normalize_provider_args turns into "True"/"False").
    """
    from .build import DEFAULT_WORKSPACE_MB, GpuInfo, cache_key, default_cache_dir, gpu_info
    from .plan import BatchProfile, graph_sha256

    gpu = gpu_info(device) or GpuInfo("unknown", "unknown")
    profile = BatchProfile.for_model(meta)
    key = cache_key(graph_sha256(model_path), meta, _trt_library_version() or "unknown", gpu, profile)
    folder = (cache_root or default_cache_dir()) / "ort-trt" / key.digest()
    options = {
        "device_id": device,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
        "trt_max_workspace_size": DEFAULT_WORKSPACE_MB << 20,
        "trt_fp16_enable": False,
        "trt_int8_enable": False,
        **profile.ort_profile_options(meta),
    }
    return options, folder


def prune_ort_trt_folders(folder: Path, model_path: Path) -> list[Path]:
    """Remove the ORT TensorRT cache folders of the same ONNX path under other keys
    (another graph after a re-export, another TensorRT): one folder per model."""
    import json
    import shutil

    source = str(Path(model_path).resolve())
    removed = []
    for other in folder.parent.iterdir() if folder.parent.is_dir() else ():
        if other == folder or not other.is_dir():
            continue
        try:
            recorded = json.loads((other / "ffrt-key.json").read_text()).get("onnx")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded == source:
            shutil.rmtree(other, ignore_errors=True)
            removed.append(other)
    return removed

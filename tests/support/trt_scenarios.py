"""Scenarios run in a subprocess against the genuine TensorRT / cuda-python wheels (see trtenv.py).

    python trt_scenarios.py api                 -> JSON: what ffrt uses, checked in this TensorRT
    python trt_scenarios.py auto MODEL.onnx     -> JSON: Detector(MODEL, backend="auto")
    python trt_scenarios.py engine PLAN CACHE   -> JSON: Detector(PLAN) (explicit tensorrt)
    python trt_scenarios.py tensorrt MODEL CACHE -> JSON: Detector(MODEL, backend="tensorrt")
Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import ctypes
import gc
import inspect
import json
import re
import sys

# Everything ffrt's TensorRT code touches. Module-level names (checked to cover every
# `trt.<Name>` in runtime/ffrt by tests/runtime/test_tensorrt_bindings.py), then methods and
# properties with the parameter names ffrt passes (keywords must match exactly).
MODULE = ["__version__", "Logger", "ILogger", "Builder", "Runtime", "OnnxParser", "NetworkDefinitionCreationFlag",
          "BuilderFlag", "MemoryPoolType", "TensorIOMode", "DataType", "nptype"]
ENUMS = [("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"), ("BuilderFlag", "TF32"), ("MemoryPoolType", "WORKSPACE"),
         ("TensorIOMode", "INPUT"), ("TensorIOMode", "OUTPUT"), ("DataType", "UINT8"), ("DataType", "FLOAT"),
         ("ILogger", "Severity")]
METHODS = [
    ("ILogger", "log", ["severity", "msg"]),
    ("Builder", "create_network", ["flags"]),
    ("Builder", "create_builder_config", []),
    ("Builder", "create_optimization_profile", []),
    ("Builder", "build_serialized_network", ["network", "config"]),
    ("OnnxParser", "parse", ["model", "path"]),
    ("OnnxParser", "num_errors", None),
    ("OnnxParser", "get_error", ["index"]),
    ("IBuilderConfig", "clear_flag", ["flag"]),
    ("IBuilderConfig", "get_flag", ["flag"]),
    ("IBuilderConfig", "set_memory_pool_limit", ["pool", "pool_size"]),
    ("IBuilderConfig", "add_optimization_profile", ["profile"]),
    ("IBuilderConfig", "create_timing_cache", ["serialized_timing_cache"]),
    ("IBuilderConfig", "set_timing_cache", ["cache", "ignore_mismatch"]),
    ("IBuilderConfig", "get_timing_cache", []),
    ("ITimingCache", "combine", ["input_cache", "ignore_mismatch"]),
    ("ITimingCache", "serialize", []),
    ("IOptimizationProfile", "set_shape", ["input", "min", "opt", "max"]),
    ("Runtime", "deserialize_cuda_engine", ["serialized_engine"]),
    ("ICudaEngine", "num_io_tensors", None),
    ("ICudaEngine", "get_tensor_name", ["index"]),
    ("ICudaEngine", "get_tensor_mode", ["name"]),
    ("ICudaEngine", "get_tensor_dtype", ["name"]),
    ("ICudaEngine", "get_tensor_shape", ["name"]),
    ("ICudaEngine", "get_tensor_profile_shape", ["name", "profile_index"]),
    ("ICudaEngine", "create_execution_context", []),
    ("IExecutionContext", "set_input_shape", ["name", "shape"]),
    ("IExecutionContext", "set_tensor_address", ["name", "memory"]),
    ("IExecutionContext", "execute_async_v3", ["stream_handle"]),
    ("IExecutionContext", "get_tensor_shape", ["name"]),
]


def _signatures(obj) -> list[list[str]]:
    """Parameter names (without self) of every overload in a pybind11 docstring."""
    doc = getattr(obj, "__doc__", "") or ""
    out = []
    for m in re.finditer(r"^(?:\d+\. )?\w+\(self: [^,)]+(?:, (.*?))?\) ->", doc, re.M):
        params = m.group(1) or ""
        out.append([p.split(":")[0].strip() for p in re.split(r", (?=\w+:)", params) if p.strip()])
    return out


def api() -> dict:
    from ffrt.tensorrt.build import import_tensorrt

    trt = import_tensorrt()
    missing, mismatched = [], []
    for name in MODULE:
        if not hasattr(trt, name):
            missing.append(name)
    for owner, name in ENUMS:
        if not hasattr(getattr(trt, owner, None), name):
            missing.append(f"{owner}.{name}")
    for owner, name, params in METHODS:
        cls = getattr(trt, owner, None)
        attr = inspect.getattr_static(cls, name, None) if cls is not None else None
        if attr is None:
            missing.append(f"{owner}.{name}")
            continue
        if params is None:
            if not isinstance(attr, property):
                mismatched.append(f"{owner}.{name} is not a property")
            continue
        sigs = _signatures(getattr(cls, name))
        if not any(s[: len(params)] == params for s in sigs):
            mismatched.append(f"{owner}.{name}{tuple(params)} not in {sigs}")
    topk_doc = (trt.INetworkDefinition.add_topk.__doc__ or "") + (trt.ITopKLayer.__doc__ or "")
    tf32_doc = next((line for line in (trt.BuilderFlag.__doc__ or "").splitlines() if line.strip().startswith("TF32")), "")
    strongly = next((line for line in (trt.NetworkDefinitionCreationFlag.__doc__ or "").splitlines()
                     if line.strip().startswith("STRONGLY_TYPED")), "")
    logger_ok = True
    try:  # ffrt's recording logger must be constructible from this ILogger
        from ffrt.tensorrt.calls import make_logger

        lg = make_logger(trt)
        mark = lg.mark()
        lg.log(trt.ILogger.Severity.ERROR, "probe")
        # One logger per process (TensorRT keeps a single logger pointer), read since a mark.
        logger_ok = lg.said(mark) == "probe" and lg.said(lg.mark()) == "" and make_logger(trt) is lg
    except Exception as e:  # noqa: BLE001
        logger_ok = f"{type(e).__name__}: {e}"
    return {"version": trt.__version__, "module": trt.__name__, "missing": missing, "mismatched": mismatched,
            "topk_limit_3840": "K up to 3840" in topk_doc, "tf32_default_on": "Enabled by default" in tf32_doc,
            "strongly_typed_doc": strongly.strip(), "logger": logger_ok}


def _fake_stats() -> list[int] | None:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        if not hasattr(lib, "fake_cuda_stats"):
            return None
        out = (ctypes.c_int * 5)()
        lib.fake_cuda_stats(out)
        return list(out)
    except OSError:
        return None


def detector(path: str, backend: str, cache: str | None = None) -> dict:
    import os

    if cache:
        os.environ["FFRT_ENGINE_CACHE"] = cache
    from ffrt import Detector, FFRTError

    out: dict = {}
    try:
        det = Detector(path, backend=backend)
        out.update(backend=det.backend_name, selection=list(det.backend_selection))
        import numpy as np

        out["score"] = float(det(np.zeros((32, 32, 3), np.uint8)).score)
        det.close()
    except FFRTError as e:
        out.update(error=type(e).__name__, message=str(e))
    gc.collect()
    out["fake_driver"] = _fake_stats()  # live device allocs, pinned allocs, streams, retained contexts, depth
    return out


def main(argv: list[str]) -> int:
    cmd = argv[0]
    if cmd == "api":
        result = api()
    elif cmd == "auto":
        result = detector(argv[1], "auto", argv[2] if len(argv) > 2 else None)
    elif cmd == "engine":
        result = detector(argv[1], "auto", argv[2] if len(argv) > 2 else None)
    elif cmd == "tensorrt":
        result = detector(argv[1], "tensorrt", argv[2] if len(argv) > 2 else None)
    else:
        raise SystemExit(f"unknown scenario {cmd}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""One runner per (graph, engine, precision) the peers benchmark times (runs in the peers venv).

A runner holds a loaded model and has two calls: ``feed(batch)`` turns the shared uint8
NHWC RGB batch into the engine's own input (untimed: anomalib's graph takes float NCHW in
[0, 1], ffrt's takes the uint8 frames), and ``run(x)`` is the model-only call that is timed.
``run`` returns (anomaly maps, scores) as numpy arrays so every row is checked for finite
outputs the same way.

Every engine gets the same thread budget (``threads``). anomalib's OpenVINO IR runs with the
CPU plugin's defaults otherwise (latency hint, one stream), as anomalib's ``OpenVINOInferencer``
compiles (``config=None``); only ``INFERENCE_PRECISION_HINT`` is set where a row forces FP32.
ffrt's rows go through ffrt's own backends (``ffrt.backends.create_backend``), as a user's
``Detector`` would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class Runner:
    key: str
    label: str
    model: str  # which architecture: "resnet18" or "lite0"
    side: str  # "anomalib" or "ffrt"
    engine: str  # "onnxruntime", "openvino", "torch"
    precision: str  # what the engine was asked to run in, e.g. "fp32", "bf16 (OpenVINO default)"
    feed: Callable[[np.ndarray], Any]
    run: Callable[[Any], tuple[np.ndarray, np.ndarray]]
    info: dict = field(default_factory=dict)
    #: OpenVINO rows: batch size -> {convolution kernel: count} of the model that ran it.
    conv_kernels: Callable[[int], dict[str, int]] | None = None


# --- inputs -----------------------------------------------------------------------------


def uint8_nhwc(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch)


def float_nchw(batch: np.ndarray) -> np.ndarray:
    """anomalib's graph input: float32 RGB in [0, 1], NCHW (its pre-processor normalizes inside)."""
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


# --- ONNX Runtime -----------------------------------------------------------------------


def anomalib_onnxruntime(path: Path, threads: int) -> Runner:
    """anomalib's ONNX on a plain ONNX Runtime CPU session (its users' call; only threads set)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x):
        score, _label, amap, _mask = sess.run(["pred_score", "pred_label", "anomaly_map", "pred_mask"], {name: x})
        return amap, score

    return Runner("anomalib_ort", "anomalib FastFlow ONNX on ONNX Runtime (FP32)", "resnet18", "anomalib",
                  "onnxruntime", "fp32", float_nchw, run, {"onnxruntime": ort.__version__, "session": "default options"})


def ffrt_onnxruntime(path: Path, threads: int, model: str, label: str) -> Runner:
    """ffrt's own ONNX Runtime CPU backend (the session options every ffrt tool uses)."""
    from ffrt.backends import create_backend
    from ffrt.metafile import read_onnx_meta

    backend, _ = create_backend("onnxruntime-cpu", path, read_onnx_meta(path), threads)
    return Runner(f"ffrt_{model}_ort", label, model, "ffrt", "onnxruntime", "fp32", uint8_nhwc, backend.run,
                  {"backend": backend.description})


# --- OpenVINO ---------------------------------------------------------------------------

_CORE = None


def ov_core():
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def ov_compile(path: Path, threads: int, force_fp32: bool, batch: int | None = None, perf_count: bool = False):
    """Compile for the CPU plugin. ``force_fp32`` sets INFERENCE_PRECISION_HINT=f32; otherwise the
    plugin's default applies, which is bf16 on CPUs with AMX / AVX512_BF16. ``batch`` reshapes
    the graph's dynamic batch to that static size first (None: as exported)."""
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads}
    if force_fp32:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if perf_count:
        config["PERF_COUNT"] = True
    model = ov_core().read_model(str(path))
    if batch is not None:
        shape = list(model.input(0).get_partial_shape())
        shape[0] = batch
        model.reshape({0: shape})
    compiled = ov_core().compile_model(model, "CPU", config)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    info = {
        "inference_precision": precision.to_string() if hasattr(precision, "to_string") else str(precision),
        "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "input_shape": str(model.input(0).get_partial_shape()),
    }
    return compiled, info


def conv_kernels(compiled_models) -> dict[str, int]:
    """{kernel: count} of the convolutions as the CPU plugin compiled them (runtime model's
    ``primitiveType``, e.g. ``brgconv_avx2_f32``): which instruction set really ran."""
    out: dict[str, int] = {}
    for compiled in compiled_models:
        for op in compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "layerType" in rt and rt["layerType"].astype(str) == "Convolution":
                kernel = rt["primitiveType"].astype(str)
                out[kernel] = out.get(kernel, 0) + 1
    return out


def _ov_precision(force_fp32: bool, info: dict) -> str:
    return "fp32 (forced)" if force_fp32 else f"{info['inference_precision']} (OpenVINO default)"


def anomalib_openvino(xml: Path, threads: int, force_fp32: bool, batch: int | None) -> Runner:
    """anomalib's OpenVINO IR (``to_openvino``) compiled as its OpenVINOInferencer does
    (``batch=None``: the dynamic batch it was exported with), or reshaped to a static batch
    first, which OpenVINO runs faster (a careful user's step; the stronger peer)."""
    import openvino as ov

    compiled, info = ov_compile(xml, threads, force_fp32, batch)
    request = compiled.create_infer_request()
    out_score, out_map = compiled.output("pred_score"), compiled.output("anomaly_map")

    def run(x):
        res = request.infer({0: x})
        return res[out_map], res[out_score]

    what = "FP32 forced" if force_fp32 else "its default precision"
    shape = "static batch" if batch else "dynamic batch as exported"
    key = ("anomalib_ov_fp32" if force_fp32 else "anomalib_ov_default") + ("" if batch else "_dynamic")
    return Runner(key, f"anomalib FastFlow -> OpenVINO IR, {what}, {shape}", "resnet18", "anomalib", "openvino",
                  _ov_precision(force_fp32, info), float_nchw, run, {"openvino": ov.__version__, **info},
                  lambda _batch: conv_kernels([compiled]))


def ffrt_openvino(path: Path, threads: int, model: str, label: str, precision: str, keep_fp32: str = "head",
                  file: str = "") -> Runner:
    """ffrt's own OpenVINO backend on ffrt's ONNX (static batch shapes, latency hint: its
    defaults). ``keep_fp32`` is the part that stays FP32 under BF16: "head" (ffrt's default),
    "none" (the whole graph in BF16, as OpenVINO's own default does). ``file``: which of the
    model's files, when not model.onnx ("int8": model.int8-cpu.onnx), for the row's key."""
    from ffrt.backends import create_backend
    from ffrt.metafile import read_onnx_meta

    options = {"keep_fp32": keep_fp32} if precision == "bf16" else {}
    backend, _ = create_backend("openvino", path, read_onnx_meta(path), threads, precision=precision, options=options)
    key = (f"ffrt_{model}_ov_" + (f"{file}_" if file else "") + precision
           + ("_all" if precision == "bf16" and keep_fp32 == "none" else ""))
    # backend.precision names what computes: "int8" / "int8+bf16" for the INT8 file, so its rows
    # never count as FP32 ones in the report's bars.
    shown = {"fp32": backend.precision,
             "bf16": f"{backend.precision}, {'whole graph' if keep_fp32 == 'none' else keep_fp32 + ' FP32'}"}
    # The backend compiles one model per batch size (its static shapes); read the one that ran.
    return Runner(key, label, model, "ffrt", "openvino", shown.get(precision, precision), uint8_nhwc, backend.run,
                  {"backend": backend.description, "precision_detail": backend.precision_detail},
                  lambda batch: conv_kernels(backend._compiled(batch).parts))


# --- PyTorch eager ----------------------------------------------------------------------


def _torch_threads(threads: int) -> str:
    import torch

    torch.set_num_threads(threads)
    return torch.__version__


def anomalib_torch(state: Path, threads: int) -> Runner:
    """anomalib's Fastflow module, eager, inference_mode, FP32: the weights its exports hold."""
    import torch

    from build_models import anomalib_model

    version = _torch_threads(threads)
    model = anomalib_model()
    model.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
    model.eval()

    def feed(batch):
        return torch.from_numpy(float_nchw(batch))

    def run(x):
        with torch.inference_mode():
            out = model(x)
        return out.anomaly_map.numpy(), out.pred_score.numpy()

    return Runner("anomalib_torch", "anomalib FastFlow, PyTorch eager (FP32)", "resnet18", "anomalib", "torch",
                  "fp32", feed, run, {"torch": version, "threads": threads})


def ffrt_torch(ckpt: Path, threads: int) -> Runner:
    """ffrt's checkpoint, eager, as ``ffbench --vs-torch`` runs it (uint8 -> float inside the timing)."""
    import torch
    from fftrain import checkpoint
    from fftrain.data import to_tensor_batch

    version = _torch_threads(threads)
    model, _ = checkpoint.load(ckpt)
    model.eval()

    def run(x):
        with torch.inference_mode():
            amap, score = model(to_tensor_batch(x))
        return amap.numpy(), score.numpy()

    return Runner("ffrt_resnet18_torch", "ffrt ResNet-18 FastFlow, PyTorch eager (FP32)", "resnet18", "ffrt", "torch",
                  "fp32", uint8_nhwc, run, {"torch": version, "threads": threads})

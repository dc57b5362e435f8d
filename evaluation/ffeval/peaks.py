"""Measured CPU peaks: the multiply-accumulate rate this machine reaches per precision.

The nominal peak (``ffeval.machine.peak_gflops``: cores x GHz x FMA units x lanes x 2) rests
on facts /proc/cpuinfo cannot give: how many FMA units a core has and how wide they really
are (a CPU may accept 512-bit instructions and execute them on 256-bit units at half the
rate), and the clock under vector load. So ffbench holds its "% of peak" against a measured
peak: compute-bound kernels built with ``onnx.helper`` and run by the runtimes the models
run on:

- FP32: a 3x3 and a 1x1 convolution and a 1024x1024 MatMul on ONNX Runtime (the session
  factory every ffrt tool uses), and on OpenVINO with ``INFERENCE_PRECISION_HINT f32`` when
  it is installed;
- BF16: the same graphs on OpenVINO with ``INFERENCE_PRECISION_HINT bf16``, where OpenVINO
  computes BF16 natively here (AVX512-BF16 or AMX-BF16);
- INT8: ``QLinearConv`` (u8 activations x s8 weights, the U8S8 encoding of ffrt's CPU INT8
  files) and ``MatMulInteger`` on ONNX Runtime, where the CPU has VNNI / AVX-VNNI / AMX-INT8.

Each kernel is called for :data:`SECONDS_PER_KERNEL` after a warm-up; its rate is that of
its fastest call (the achievable rate: a call that another process interrupted is slower,
never faster), and a precision's peak is its fastest kernel. One thread per physical core,
as ffrt's backends run.

The result is remembered per machine in ``<ffrt cache>/cpu-peaks.json`` (the cache folder
of ``backend="auto"``'s choice: ``$FFRT_ENGINE_CACHE``, default ``~/.cache/ffrt/engines``)
under a key of the CPU model, its vector/matrix flags, the physical core count and the
runtime versions; delete the file to measure again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "bf16", "int8")
CACHE_NAME = "cpu-peaks.json"
#: How long each kernel is called for (after its warm-up calls).
SECONDS_PER_KERNEL = 0.4
WARMUP_CALLS = 3
#: Libraries whose kernels the figures come from: a new version measures again.
LIBRARIES = ("onnxruntime", "openvino")
MAX_ENTRIES = 16
_OPSET = 17


@dataclass(frozen=True)
class Kernel:
    """One compute-bound graph: its name, the ONNX model, the input's shape and dtype, and
    the multiply-accumulates of one call."""

    name: str
    model: object  # onnx.ModelProto
    shape: tuple[int, ...]
    dtype: type
    macs: int


def _conv(name: str, channels: int, side: int, k: int, int8: bool) -> Kernel:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = (1, channels, side, side)
    macs = channels * channels * k * k * side * side
    pads = [k // 2] * 4
    if int8:
        scalars = {"xs": np.float32(0.02), "xz": np.uint8(128), "ws": np.float32(0.01), "wz": np.int8(0),
                   "ys": np.float32(0.5), "yz": np.uint8(128)}
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (channels, channels, k, k), dtype=np.int8), "w")]
        inits += [numpy_helper.from_array(np.array(v), n) for n, v in scalars.items()]
        node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=pads)
        io_type, dtype = TensorProto.UINT8, np.uint8
    else:
        w = (rng.standard_normal((channels, channels, k, k)) * 0.01).astype(np.float32)
        inits = [numpy_helper.from_array(w, "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=pads)
        io_type, dtype = TensorProto.FLOAT, np.float32
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", io_type, list(shape))],
                              [helper.make_tensor_value_info("y", io_type, list(shape))], initializer=inits)
    return Kernel(name, helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)]), shape, dtype, macs)


def _matmul(name: str, n: int, int8: bool) -> Kernel:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        w = rng.integers(-127, 128, (n, n), dtype=np.int8)
        node, in_type, out_type, dtype = helper.make_node("MatMulInteger", ["x", "w"], ["y"]), TensorProto.UINT8, \
            TensorProto.INT32, np.uint8
    else:
        w = (rng.standard_normal((n, n)) * 0.01).astype(np.float32)
        node, in_type, out_type, dtype = helper.make_node("MatMul", ["x", "w"], ["y"]), TensorProto.FLOAT, \
            TensorProto.FLOAT, np.float32
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", in_type, [n, n])],
                              [helper.make_tensor_value_info("y", out_type, [n, n])],
                              initializer=[numpy_helper.from_array(w, "w")])
    return Kernel(name, helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)]), (n, n), dtype, n ** 3)


def kernels(int8: bool) -> list[Kernel]:
    """The compute-bound graphs: a 3x3 convolution (FastFlow's subnets and ResNet's blocks), a
    1x1 convolution (the flows' mixing, EfficientNet's expansions) and a square GEMM."""
    q = "int8 " if int8 else ""
    return [_conv(f"{q}conv 3x3, 256 channels, 28x28", 256, 28, 3, int8),
            _conv(f"{q}conv 1x1, 256 channels, 56x56", 256, 56, 1, int8),
            _matmul(f"{q}matmul 1024x1024x1024", 1024, int8)]


def _best_rate(call: Callable[[], object], macs: int, seconds: float) -> dict:
    for _ in range(WARMUP_CALLS):
        call()
    times = []
    end = time.perf_counter() + seconds
    while not times or time.perf_counter() < end:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    a = np.asarray(times)
    return {"gops": 2.0 * macs / a.min() / 1e9, "median_gops": 2.0 * macs / float(np.median(a)) / 1e9,
            "calls": int(a.size)}


def _onnxruntime_runner(kernel: Kernel, threads: int | None) -> Callable[[], object]:
    from ffcore.ort import make_session

    session = make_session(kernel.model.SerializeToString(), threads)
    x = np.random.default_rng(1).integers(0, 256, kernel.shape).astype(kernel.dtype)
    return lambda: session.run(None, {"x": x})


def _openvino_runner(kernel: Kernel, threads: int | None, hint: str) -> Callable[[], object]:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    model = core.read_model(kernel.model.SerializeToString(), b"")
    request = core.compile_model(model, "CPU", config).create_infer_request()
    x = np.random.default_rng(1).standard_normal(kernel.shape).astype(np.float32)
    return lambda: request.infer({0: x})


def plan(flags: dict[str, bool], openvino_problem: str | None, bf16_problem: str | None) -> dict[str, list[str] | str]:
    """Per precision, the runtimes to measure it on, or why it is not measured here."""
    out: dict[str, list[str] | str] = {"fp32": ["onnxruntime"] + ([] if openvino_problem else ["openvino"])}
    if not (flags.get("avx512_bf16") or flags.get("amx_bf16")):
        out["bf16"] = "the CPU has neither AVX512-BF16 nor AMX-BF16"
    elif openvino_problem or bf16_problem:
        out["bf16"] = f"OpenVINO cannot run BF16 here: {openvino_problem or bf16_problem}"
    else:
        out["bf16"] = ["openvino"]
    if any(flags.get(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8")):
        out["int8"] = ["onnxruntime"]
    else:
        out["int8"] = "the CPU has no VNNI, AVX-VNNI or AMX-INT8"
    return out


def measure(todo: dict[str, list[str] | str], threads: int | None = None,
            seconds: float = SECONDS_PER_KERNEL) -> dict[str, dict]:
    """Run the kernels of each precision ``todo`` lists (:func:`plan`); per precision: the
    peak (``gops``: giga multiply-accumulate operations x 2 per second), the kernel and
    runtime that reached it, every kernel's figures, or ``None`` with ``why_not``."""
    out: dict[str, dict] = {}
    for precision in PRECISIONS:
        runtimes = todo.get(precision)
        if not isinstance(runtimes, list):
            out[precision] = {"gops": None, "why_not": runtimes or "not measured"}
            continue
        rows = []
        for kernel in kernels(int8=precision == "int8"):
            for runtime in runtimes:
                if runtime == "onnxruntime":
                    call = _onnxruntime_runner(kernel, threads)
                else:
                    call = _openvino_runner(kernel, threads, "bf16" if precision == "bf16" else "f32")
                rows.append({"kernel": kernel.name, "runtime": runtime, "macs": kernel.macs,
                             **_best_rate(call, kernel.macs, seconds)})
                del call
        best = max(rows, key=lambda r: r["gops"])
        out[precision] = {"gops": best["gops"], "kernel": best["kernel"], "runtime": best["runtime"], "kernels": rows}
    return out


# --- the cache ------------------------------------------------------------------------------


def cache_path() -> Path:
    from ffrt.tensorrt.build import default_cache_dir

    return default_cache_dir() / CACHE_NAME


def machine_key(machine: dict) -> str:
    """What the figures depend on, from ``ffeval.machine.describe()``: the CPU model, its
    flags, the physical cores and the versions of the runtimes that ran the kernels."""
    cpu, software = machine["cpu"], machine["software"]
    parts = [str(cpu["model"]), str(cpu["arch"]), " ".join(sorted(f for f, on in cpu["flags"].items() if on)),
             f"cores={cpu['physical_cores']}"] + [f"{lib}={software.get(lib)}" for lib in LIBRARIES]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {"entries": {}}
    except (OSError, ValueError):
        return {"entries": {}}  # absent or damaged: measure again


def _write(path: Path, key: str, entry: dict) -> str | None:
    from ffcore.files import atomic_write_bytes

    entries = _read(path)["entries"]
    entries.pop(key, None)
    entries[key] = entry
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"entries": entries}, indent=1).encode())
    except OSError as e:  # a read-only home: the figures are still reported, measured again next time
        return f"not remembered ({e})"
    return None


def measured_peaks(machine: dict, path: Path | None = None, measure_fn: Callable[..., dict] = measure,
                   progress: Callable[[str], None] = lambda s: None) -> dict:
    """This machine's measured peaks: from the cache when its key matches, else measured now
    (a few seconds) and remembered. ``{"key", "measured_at", "from_cache", "cache",
    "threads", "peaks": {precision: ...}}``."""
    from ffrt.backends.base import precision_problem

    path = cache_path() if path is None else Path(path)
    key = machine_key(machine)
    entry = _read(path)["entries"].get(key)
    if entry is not None and set(entry.get("peaks", {})) == set(PRECISIONS):
        return {**entry, "key": key, "from_cache": True, "cache": str(path)}
    progress("measuring this CPU's peak multiply-accumulate rate per precision (once per machine, a few seconds)")
    todo = plan(machine["cpu"]["flags"], precision_problem("openvino", "fp32"), precision_problem("openvino", "bf16"))
    threads = machine["cpu"]["physical_cores"]
    entry = {"measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "load_average_1min": _loadavg(), "threads": threads, "seconds_per_kernel": SECONDS_PER_KERNEL,
             "peaks": measure_fn(todo, threads)}
    note = _write(path, key, entry)
    return {**entry, "key": key, "from_cache": False, "cache": note or str(path)}


def _loadavg() -> float | None:
    """The 1-minute load average when the peaks were measured: a busy machine measures low."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# --- the report ------------------------------------------------------------------------------


def peaks_by_precision(machine: dict, measured: dict) -> dict[str, dict]:
    """Per precision, the measured peak next to the nominal one (``machine``'s
    ``cpu_peak_by_precision``, its formula written out with this CPU's numbers) and the
    measured share of the nominal."""
    nominal = machine.get("cpu_peak_by_precision") or {}
    fp32 = machine.get("cpu_peak")
    out = {}
    for p in PRECISIONS:
        m, n = measured["peaks"].get(p) or {}, nominal.get(p)
        got = m.get("gops")
        out[p] = {"measured_gops": got, "measured_by": f"{m['kernel']} on {m['runtime']}" if got else None,
                  "why_not_measured": None if got else m.get("why_not"),
                  "nominal_gops": n["gops"] if n else None,
                  "nominal_formula": _formula(p, n, fp32) if n else None,
                  "nominal_derivation": n["derivation"] if n else None,
                  "measured_over_nominal": got / n["gops"] if got and n and n["gops"] else None}
    return out


def _formula(precision: str, nominal: dict, fp32: dict) -> str:
    """The nominal figure as the product it is: cores x GHz x FMA units x lanes x 2 for FP32,
    cores x GHz x ops per cycle per core (with where that rate comes from) otherwise."""
    head = f"{fp32['cores']} cores x {fp32['ghz']:.3f} GHz"
    if precision == "fp32":
        return f"{head} x {fp32['fma_units']} FMA units x {fp32['fp32_lanes']} lanes x 2"
    return f"{head} x {nominal['ops_per_cycle_per_core']:g} ops per cycle per core ({nominal['derivation']})"


def float_part(precision: str) -> str:
    """The float precision whose peak a backend's run is held to: "bf16" when any part ran
    BF16, else "fp32". An INT8 file converts only some of its convolutions (the rest, and
    all its other work, stays float), so it is held to its float part's peak."""
    return "bf16" if "bf16" in precision else "fp32"


def peak_used(by_precision: dict[str, dict], precision: str) -> tuple[str, float | None]:
    """(the precision whose peak applies, its measured giga-ops/s or None)."""
    p = float_part(precision)
    return p, (by_precision.get(p) or {}).get("measured_gops")


def peak_lines(by_precision: dict[str, dict], measured: dict) -> list[str]:
    """The measured peaks with the nominal formula beside them, one line per precision."""
    where = f"cached from {measured['measured_at']}" if measured["from_cache"] else "measured now"
    lines = []
    for p, e in by_precision.items():
        nominal = (f"nominal {e['nominal_gops']:.0f} = {e['nominal_formula']}" if e["nominal_gops"]
                   else "no nominal figure")
        if e["measured_gops"]:
            share = f", {100 * e['measured_over_nominal']:.0f}% of nominal" if e["measured_over_nominal"] else ""
            lines.append(f"peak     {p}: measured {e['measured_gops']:.0f} G ops/s ({e['measured_by']}{share}) | {nominal}")
        else:
            lines.append(f"peak     {p}: not measured ({e['why_not_measured']}) | {nominal}")
    load = measured.get("load_average_1min")
    busy = f" (1-min load {load:g} then: other processes may have made it read low)" if load and load > measured[
        "threads"] else ""
    lines.append(f"         measured = the best call of {measured.get('seconds_per_kernel', SECONDS_PER_KERNEL):g} s of "
                 f"calls per kernel, {measured['threads']} threads; {where}{busy}, {measured['cache']}")
    return lines

"""The OpenVINO backend ("openvino"): ffrt's ONNX files on Intel's CPU runtime, precision explicit.

Reads the same ``.onnx`` as the other backends (FP32, FP16 and INT8 Q/DQ files; OpenVINO runs
Q/DQ convolutions as INT8 kernels, with AMX-INT8/VNNI where the CPU has them) and imports
``openvino`` only when probed or built (extra ``openvino``).

Precision is set, never left to OpenVINO: its CPU plugin computes in BF16 by default on CPUs
with AMX ("inference_precision" hint, docs.openvino.ai "CPU Device", "Supported Inference Data
Types"), which changes the scores. ``precision="fp32"`` sets the FP32 hint; ``"bf16"`` runs the
body in BF16 and the part named by ``keep_fp32`` in FP32 (two compiled models, see ovgraph.py
for why not per-node marks); ``"auto"`` runs BF16 only when the file carries a passed BF16
accuracy gate for this configuration (``meta.precision_gates``) and the CPU computes BF16
natively, else FP32. Which precision each node actually ran in is read back from the runtime
model and checked after every compile.

Shapes: ``batch_shapes="static"`` (default) compiles one model per batch size seen (the last
:data:`MAX_SHAPES` kept; about 0.3 s each at 256x256): OpenVINO's static-shape kernels are
much faster on this graph than its dynamic-shape path (benchmarks/openvino_cpu.py).
``"dynamic"`` compiles once for any batch.

Options (``Detector(..., backend="openvino", backend_options={...})``):
``performance_hint`` "latency" (default: one stream on every thread, best for one image per
call) or "throughput" (OpenVINO's streams; predict_batch then runs its chunks on that many
infer requests at once), ``infer_requests`` (default: OpenVINO's optimal number for the hint),
``batch_shapes`` "static" | "dynamic", ``keep_fp32`` "head" (default) | "flows" | "none"
(BF16 only: what stays FP32; "none" = the whole graph in BF16, as OpenVINO's default does),
``perf_count`` (False; True: OpenVINO times every node, read with :meth:`OpenVinoBackend.profile`).

Thread-safety: each call takes one infer request (per shape) from a pool and returns it, so
one backend serves several threads; compiling a new shape is locked.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ffcore.ort import physical_core_count

from ..errors import BackendUnavailableError, InferenceError, InvalidArgumentError, ModelFileError
from ..meta import ModelMeta
from . import ovgraph
from .base import Backend, BackendSpec, check_threads, import_library, register_backend
from .contract import Port, check_contract

HINT = 'pip install "ffrt[openvino]"'
OPTION_KEYS = ("performance_hint", "infer_requests", "batch_shapes", "keep_fp32", "perf_count")
#: Compiled batch sizes kept per backend (static shapes).
MAX_SHAPES = 8
_ONNX_TYPES = {"u8": "uint8", "i8": "int8", "f32": "float", "f16": "float16", "bf16": "bfloat16", "i64": "int64",
               "i32": "int32", "boolean": "bool", "f64": "double"}


def _import_ov():
    return import_library("openvino", "OpenVINO", HINT)


def _probe() -> str | None:
    try:
        ov = _import_ov()
    except BackendUnavailableError as e:
        return str(e)
    if "CPU" not in ov.Core().available_devices:
        return "OpenVINO finds no CPU device it supports on this machine"
    return None


def bf16_problem(core=None) -> str | None:
    """None when this CPU computes BF16 natively (OpenVINO lists "BF16" among the CPU's
    OPTIMIZATION_CAPABILITIES: AVX512-BF16 or AMX-BF16), else why BF16 is refused here.
    Without native BF16 OpenVINO would emulate it, slower than FP32."""
    try:
        core = core or _import_ov().Core()
    except BackendUnavailableError as e:
        return str(e)
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        return f"this CPU has no native BF16 (OpenVINO reports {', '.join(caps)}; BF16 needs AVX512-BF16 or AMX)"
    return None


def _precision_problem(precision: str) -> str | None:
    return bf16_problem() if precision == "bf16" else None


def gate_for(meta: ModelMeta, keep_fp32: str):
    """The file's passed BF16 gate for ``keep_fp32``, or None."""
    for gate in meta.precision_gates:
        if gate.precision == "bf16" and gate.keep_fp32 == keep_fp32 and gate.passed:
            return gate
    return None


def _choice(name: str, value, allowed: tuple) -> object:
    if value not in allowed:
        raise InvalidArgumentError(f"openvino option {name} must be one of {', '.join(map(repr, allowed))}, not {value!r}.")
    return value


class _Compiled:
    """One input shape: the compiled model (or body + FP32 tail) and a pool of infer requests."""

    def __init__(self, core, model, config: dict, fp32_config: dict, keep_fp32: str | None, boundary,
                 requests: int | None, outputs: tuple[str, str]):
        if keep_fp32 is None:
            self.parts = [core.compile_model(model, "CPU", config)]
        else:
            # The body hands its outputs over in BF16: an FP32 output would make the CPU plugin
            # keep the body's own tail (everything after its last convolution: the last flow
            # steps) in FP32 with reorders between the two (Graph::EnforceInferencePrecision skips
            # the graph tail unless the output's precision is the inference precision), which is
            # slower (benchmarks/README.md, "Figures behind the code's defaults"). The values are
            # BF16 there anyway; the tail casts to FP32.
            cut = ovgraph.split(model, keep_fp32, boundary)
            self.parts = [core.compile_model(cut.body, "CPU", config), core.compile_model(cut.tail, "CPU", fp32_config)]
        self.outputs = outputs
        n = requests or int(self.parts[0].get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.size = max(1, n)
        self._slots: queue.Queue = queue.Queue()
        for _ in range(self.size):
            self._slots.put([p.create_infer_request() for p in self.parts])

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        requests = self._slots.get()
        try:
            return self.infer_on(requests, batch)
        finally:
            self._slots.put(requests)

    def infer_on(self, requests: list, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        requests[0].infer({0: batch}, share_inputs=True)
        for i, later in enumerate(requests[1:]):
            # The body's outputs are the tail's inputs: shared, not copied.
            for k in range(len(self.parts[i].outputs)):
                later.set_input_tensor(k, requests[i].get_output_tensor(k))
            later.infer()
        last = requests[-1]
        return last.get_tensor(self.outputs[0]).data.copy(), last.get_tensor(self.outputs[1]).data.copy()


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, model_path: Path, meta: ModelMeta, threads: int | None, precision: str = "auto",
                 options: dict | None = None):
        ov = _import_ov()
        check_threads(threads)
        options = dict(options or {})
        self.hint = _choice("performance_hint", options.get("performance_hint", "latency"), ("latency", "throughput"))
        self.batch_shapes = _choice("batch_shapes", options.get("batch_shapes", "static"), ("static", "dynamic"))
        keep = _choice("keep_fp32", options.get("keep_fp32", "head"), ovgraph.KEEP_FP32)
        requests = options.get("infer_requests")
        if requests is not None and (not isinstance(requests, int) or isinstance(requests, bool) or requests < 1):
            raise InvalidArgumentError(f"openvino option infer_requests must be a positive integer, not {requests!r}.")
        self.perf_count = bool(options.get("perf_count", False))
        self.threads = threads if threads is not None else physical_core_count()
        self._ov_version = ov.get_version().split("-")[0]
        self._core = ov.Core()
        self._meta, self._path = meta, Path(model_path)
        try:
            self._model = self._core.read_model(str(model_path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError for any unreadable graph
            raise ModelFileError(f"{model_path}: OpenVINO cannot read this model: {' '.join(str(e).split())[:400]}") from e
        self._input, *self._outputs = check_contract(
            [_port(p) for p in self._model.inputs], [_port(p) for p in self._model.outputs], meta, model_path)

        self.keep_fp32 = self._resolve_precision(precision, keep)
        self._requests = requests
        self._lock = threading.Lock()
        self._shapes: OrderedDict[int | None, _Compiled] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self.runtime_precisions: dict[str, dict[str, int]] = {}
        self._compiled(1 if self.batch_shapes == "static" else None)  # fail now, not on the first part

    # -- precision ------------------------------------------------------------------------

    def _resolve_precision(self, requested: str, keep: str) -> str | None:
        """Set ``precision``/``precision_detail``; return the cut for BF16 (None: one graph)."""
        encoded = self._meta.precision  # "int8" Q/DQ parts run as INT8 whatever the float precision
        native = bf16_problem(self._core)
        if requested == "auto":
            gate = gate_for(self._meta, keep)
            if gate is not None and native is None:
                why = f"precision='auto': the file's BF16 gate passed for keep_fp32={keep!r} ({gate.summary()})"
                requested = "bf16"
            else:
                why = ("precision='auto': " + (native if gate is not None else
                       f"the file carries no passed BF16 accuracy gate for keep_fp32={keep!r} (ffcalib bf16 writes one)"))
                requested = "fp32"
        else:
            why = f"precision={requested!r} requested"
        if requested == "bf16" and native is not None:
            raise BackendUnavailableError(f"openvino cannot run BF16 here: {native}")
        float_part = "bf16" if requested == "bf16" else "fp32"
        # As ONNX Runtime names it: the file's encoding ("fp16": FP16 weights, computed in FP32 on
        # this CPU; "int8": Q/DQ convolutions in INT8, the rest FP32), "+bf16" where BF16 runs.
        self.precision = encoded if float_part == "fp32" else (float_part if encoded == "fp32" else
                                                               f"{encoded}+{float_part}")
        if requested == "bf16":
            kept = {"head": "the anomaly head in FP32", "flows": "the flows and the head in FP32",
                    "none": "the whole graph in BF16 (nothing kept FP32)"}[keep]
            self.precision_detail = f"BF16 with {kept}; {why}"
            return None if keep == "none" else keep
        self.precision_detail = f"FP32 (OpenVINO's inference precision hint set to f32); {why}"
        return None

    def _config(self, element_type: str) -> dict:
        import openvino.properties.hint as hints

        ov = _import_ov()
        mode = hints.PerformanceMode.LATENCY if self.hint == "latency" else hints.PerformanceMode.THROUGHPUT
        config = {hints.inference_precision: ov.Type.bf16 if element_type == "bf16" else ov.Type.f32,
                  hints.performance_mode: mode}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.perf_count:
            config["PERF_COUNT"] = True
        return config

    def _check_precisions(self, compiled: _Compiled) -> None:
        """What each part ran in, from the runtime model; refuse a silent change of precision."""
        low = ("bf16", "f16")
        names = ["graph"] if len(compiled.parts) == 1 else ["body", "fp32 part"]
        counts = {n: ovgraph.precision_counts(p) for n, p in zip(names, compiled.parts)}
        self.runtime_precisions = counts
        bf16 = self.precision.endswith("bf16")
        fp32_parts = names[1:] if bf16 else names
        for n in fp32_parts:
            if any(counts[n].get(p) for p in low):
                raise BackendUnavailableError(
                    f"OpenVINO ran {sum(counts[n].get(p, 0) for p in low)} nodes of the {n} in reduced precision although "
                    f"FP32 was set ({counts[n]}); this OpenVINO ({self._ov_version}) does not honour the precision hint")
        if bf16 and not counts[names[0]].get("bf16"):
            raise BackendUnavailableError(f"OpenVINO ran no node in BF16 although BF16 was set ({counts[names[0]]})")

    # -- running --------------------------------------------------------------------------

    def _compiled(self, n: int | None) -> _Compiled:
        with self._lock:
            if self._closed:
                raise InferenceError("this openvino backend is closed; create a new Detector")
            found = self._shapes.get(n)
            if found is not None:
                self._shapes.move_to_end(n)
                return found
            model = self._model.clone()
            if n is not None:
                model.reshape({self._input: [n, self._meta.input.height, self._meta.input.width, 3]})
            main = "bf16" if self.precision.endswith("bf16") else "f32"
            boundary = _import_ov().Type.bf16 if main == "bf16" else None
            compiled = _Compiled(self._core, model, self._config(main), self._config("f32"), self.keep_fp32, boundary,
                                 self._requests or (1 if self.hint == "latency" else None), tuple(self._outputs))
            self._check_precisions(compiled)
            self._shapes[n] = compiled
            while len(self._shapes) > MAX_SHAPES:
                self._shapes.popitem(last=False)
            return compiled

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._compiled(len(batch) if self.batch_shapes == "static" else None).infer(batch)

    def run_chunks(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Chunks on parallel infer requests (throughput hint: one per OpenVINO stream)."""
        first = self._compiled(len(batches[0]) if self.batch_shapes == "static" else None)
        if len(batches) < 2 or first.size < 2:
            return [self.run(b) for b in batches]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=first.size, thread_name_prefix="ffrt-openvino")
            pool = self._pool
        # OpenVINO releases the GIL while a request runs, so the threads overlap on its streams.
        return list(pool.map(self.run, batches))

    def profile(self, batch: np.ndarray) -> list[dict]:
        """Run ``batch`` once and return OpenVINO's per-node times (option ``perf_count=True``):
        part ("graph", "body", "fp32 part"), node, layer type, kernel, precision, ms."""
        if not self.perf_count:
            raise InvalidArgumentError('profile() needs backend_options={"perf_count": True}')
        compiled = self._compiled(len(batch) if self.batch_shapes == "static" else None)
        requests = compiled._slots.get()
        try:
            compiled.infer_on(requests, batch)
            names = ["graph"] if len(requests) == 1 else ["body", "fp32 part"]
            return [{"part": part, "node": i.node_name, "type": i.node_type, "kernel": i.exec_type,
                     "ms": i.real_time.total_seconds() * 1000.0}
                    for part, r in zip(names, requests) for i in r.get_profiling_info()]
        finally:
            compiled._slots.put(requests)

    @property
    def providers(self) -> tuple[str, ...]:
        return (f"OpenVINO {self._ov_version}", "CPU")

    @property
    def description(self) -> str:
        kept = f", {self.keep_fp32} kept FP32" if self.keep_fp32 else ""
        return (f"openvino (OpenVINO {self._ov_version} CPU, {self.precision}{kept}, {self.threads or 'default'} threads, "
                f"{self.hint} hint, {self.batch_shapes} batch)")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._shapes.clear()
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _port(output) -> Port:
    ps = output.get_partial_shape()
    dims = None if ps.rank.is_dynamic else [d.get_length() if d.is_static else None for d in ps]
    kind = output.get_element_type().get_type_name()
    return Port(output.get_any_name(), f"tensor({_ONNX_TYPES.get(kind, kind)})", dims)


register_backend(
    BackendSpec(
        name="openvino",
        probe=_probe,
        create=lambda path, meta, threads, device=0, precision="auto", options=None: OpenVinoBackend(
            path, meta, threads, precision, options),
        precision_problem=_precision_problem,
        option_keys=OPTION_KEYS,
    )
)

"""INT8 post-training quantization of an exported ffrt model: one calibration, two encodings.

    from ffcalib.int8 import quantize_model
    report = quantize_model("model.onnx", "out/", calib_paths, val_images=paths, val_labels=labels)

writes
- ``out/model.int8-trt.onnx`` (metadata target "tensorrt"): Q/DQ on the inputs of the
  quantized convolutions, symmetric int8 activations and weights, zero point 0, per-channel
  weight scales, bias left in float: the explicit-quantization form TensorRT consumes.
- ``out/model.int8-cpu.onnx`` (metadata target "cpu"): Q/DQ, uint8 activations with zero
  points, per-channel int8 weights (int32 bias), conv outputs quantized with the ReLU6
  folded in: the U8S8 QLinearConv form ONNX Runtime's x86 VNNI kernels are fast on.
  (Symmetric S8S8 Q/DQ measured *slower* than FP32 on this CPU, see DESIGN.md: never ship
  the -trt file to CPUs; the Detector warns if you do.)

FastFlow needs one more step that plain post-training quantization lacks: its flow head
must be re-fit on the INT8 backbone's features (``refit_head``, supplied by ffexport,
which has the checkpoint; export/ffexport/int8_head.py gives the measurements).

One calibration pass: the calibrator runs once and its per-tensor (min, max) ranges are
saved with ``onnxruntime.quantization.save_tensors_data``; both ``quantize_static`` calls
then read them through ``calibration_cache_path`` and never run calibration again. The
ranges are stored asymmetric; the -trt encoding symmetrizes them to max(|min|, |max|)
(``ActivationSymmetric=True``), the -cpu encoding maps [min, max] onto uint8 with a zero
point. What this relies on in onnxruntime 1.32 (read in the installed source and docs):
- ``quantize_static(..., calibration_cache_path=...)`` + ``save_tensors_data`` /
  ``load_tensors_data``: microsoft/onnxruntime PR #28221 ("add calibration cache to
  quantize_static", fixes issue #21908: reuse ranges while varying quant types);
- the ``quantize_static`` docstring's guidance: QUInt8 activations + QInt8 weights,
  reduce_range=False on VNNI CPUs; symmetric QInt8 for both when targeting TensorRT;
- extra_options ``ActivationSymmetric``, ``WeightSymmetric`` and ``QuantizeBias``
  (``QuantizeBias=False`` keeps the Conv bias float, qdq_quantizer.py);
- ``create_calibrator`` options ``symmetric`` (set False for every method, so the one set
  of ranges serves the asymmetric uint8 encoding too; Percentile defaults to True). Its
  ``max_intermediate_outputs`` is NOT used: in 1.32 ``collect_data`` clears the buffered
  outputs when the limit is hit without merging them ("No data is collected."), so
  memory is bounded by calling ``collect_data`` once per chunk instead (each call merges).

Scope: only the backbone's convolutions are quantized by default; the normalizing-flow
head stays float (its exp / log-likelihood ranges are wide and the score is a sum of
squares). The backbone is found from the graph itself: every node upstream of the
LayerNormalization nodes (the per-scale norms that open each flow). Calibration runs on
that backbone subgraph only (the flows need no ranges), which is also faster.

Accuracy gate: FP32 and both INT8 files are scored on a validation set with ONNX
Runtime on this CPU (the CLI's default set is validation data: the training normals held
out from calibration plus synthetic defects drawn on them; a test split would let the
gate tune the shipped file on the data its accuracy is later reported on); image AUROC may not drop by more than ``max_auroc_drop`` (when the
set has both classes) and the Spearman rank correlation of the INT8 scores with the FP32
scores must be at least ``min_spearman``. If the gate fails (and ``force`` is False) the
files are NOT written and :class:`AccuracyGateError` carries the report.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ffrt.errors import ModelFileError
from ffrt.meta import ModelMeta, meta_from_proto, read_onnx_meta, set_proto_meta

from .images import CalibError, load_images, sample_evenly

log = logging.getLogger("ffcalib")

METHODS = ("minmax", "entropy", "percentile")
SCOPES = ("backbone", "all")
TRT_NAME = "model.int8-trt.onnx"
CPU_NAME = "model.int8-cpu.onnx"
DEFAULT_MAX_AUROC_DROP = 0.01
#: Lowest accepted Spearman rank correlation of INT8 vs FP32 image scores on the
#: validation set. 0.95 means the INT8 model orders parts essentially like FP32. For scale
#: (ELPV demo model, measured): Gaussian noise of 2% / 5% / 10% RMS on the backbone
#: features gives Spearman 0.999 / 0.969 / 0.649 and AUROC -0.001 / -0.021 / -0.174, so
#: 0.95 admits roughly the feature noise that still costs about 0.01-0.02 AUROC.
DEFAULT_MIN_SPEARMAN = 0.95
#: The same bound when each INT8 file's flow head was re-fit (ffexport --int8). A re-fit head
#: is a re-trained head: its scores are not the FP32 head's plus noise, and the noise ->
#: AUROC link above no longer holds (the head adapts; image AUROC is gated directly).
#: Measured on the ELPV demo model (460 test cells): merely continuing the FP32 head's
#: training for the same 6 epochs on FP32 features gives Spearman 0.978 against the shipped
#: FP32 (AUROC 0.901 -> 0.917); the re-fit INT8 heads give 0.916 (TensorRT encoding) and
#: 0.950 (CPU encoding) at AUROC 0.892 / 0.911. 0.90 still refuses a head that orders parts
#: differently (a broken re-fit scores ~0, plain PTQ ~0.0-0.3).
DEFAULT_MIN_SPEARMAN_REFIT = 0.90


class AccuracyGateError(CalibError):
    """INT8 lost too much accuracy; ``.report`` has the figures. Nothing was written."""

    def __init__(self, message: str, report: "Int8Report"):
        super().__init__(message)
        self.report = report


@dataclass
class EncodingAccuracy:
    auroc: float | None
    auroc_drop: float | None
    spearman: float
    max_abs_score_diff: float
    passed: bool
    #: Share of validation images on which this file's pass/fail decision (its own stored
    #: image threshold) equals the FP32 file's.
    decision_agreement: float | None = None


@dataclass
class Accuracy:
    images: int
    defects: int
    fp32_auroc: float | None
    encodings: dict[str, EncodingAccuracy]
    max_auroc_drop: float
    min_spearman: float
    #: Which images the gate ran on (e.g. held-out training normals + synthetic defects).
    source: str = ""

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.encodings.values())


@dataclass
class Latency:
    batch: int
    ms_per_batch: dict[str, float]  # model label -> median ms per batch
    images_per_s: dict[str, float]
    speedup_vs_fp32: dict[str, float]


@dataclass
class Int8Report:
    fp32_path: str
    outputs: dict[str, str]  # "tensorrt"/"cpu" -> written path ("" when not written)
    method: str
    calib_images: int
    op_types: tuple[str, ...]
    scope: str
    quantized_nodes: list[str]  # node names of the FP32 graph that got Q/DQ
    quantized_by_type: dict[str, int]
    float_nodes_by_type: dict[str, int]  # op types of the candidate type left in float
    calib_seconds: float
    quantize_seconds: float
    head_fit: dict[str, str] = field(default_factory=dict)  # target -> how its flow head was re-fit
    accuracy: Accuracy | None = None
    latency: list[Latency] = field(default_factory=list)
    threads: int | None = None
    written: bool = False
    forced: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [
            f"INT8 ({self.method} calibration on {self.calib_images} images, one pass, scope={self.scope}, "
            f"op types {','.join(self.op_types)}):",
            f"  quantized: {sum(self.quantized_by_type.values())} nodes "
            + ", ".join(f"{k} x{v}" for k, v in sorted(self.quantized_by_type.items()))
            + (
                "; left float: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.float_nodes_by_type.items()))
                if self.float_nodes_by_type
                else ""
            ),
        ]
        for target, how in self.head_fit.items():
            lines.append(f"  int8-{target} head: {how}")
        a = self.accuracy
        if a is not None:
            fp = f"{a.fp32_auroc:.4f}" if a.fp32_auroc is not None else "n/a (one class)"
            lines.append(f"  gate set: {a.source or 'images given by the caller'}")
            lines.append(f"  accuracy on these {a.images} images ({a.defects} defective): FP32 AUROC {fp}")
            for name, e in a.encodings.items():
                au = f"AUROC {e.auroc:.4f} (drop {e.auroc_drop:+.4f}), " if e.auroc is not None else ""
                lines.append(
                    f"    int8-{name:<8} {au}Spearman vs FP32 {e.spearman:.4f}, max |score diff| "
                    f"{e.max_abs_score_diff:.4g}"
                    + (f", same pass/fail as FP32 on {e.decision_agreement:.1%}" if e.decision_agreement is not None else "")
                    + f"  {'ok' if e.passed else 'FAILED'}"
                )
            lines.append(
                f"  gate: AUROC drop <= {a.max_auroc_drop}, Spearman >= {a.min_spearman}: "
                f"{'passed' if a.passed else 'FAILED' + (' (forced)' if self.forced else '')}"
            )
        for lat in self.latency:
            parts = [f"{k} {v:.1f} ms ({lat.images_per_s[k]:.1f} img/s)" for k, v in lat.ms_per_batch.items()]
            sp = ", ".join(f"{k} x{v:.2f}" for k, v in lat.speedup_vs_fp32.items())
            lines.append(f"  latency batch {lat.batch} ({self.threads} threads): " + "; ".join(parts) + f"; speedup {sp}")
        for target, path in self.outputs.items():
            lines.append(f"  {target:<9} -> {path if path else '(not written)'}")
        return "\n".join(lines)


# -- graph analysis -----------------------------------------------------------------------


def _ensure_node_names(model) -> None:
    """Give every node a unique name (nodes_to_quantize addresses nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def backbone_boundary(model) -> list[str]:
    """The tensors entering the LayerNormalization nodes (the backbone's feature maps)."""
    inits = {t.name for t in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "LayerNormalization" and n.input[0] not in inits]


def backbone_nodes(model) -> list:
    """The backbone's nodes in graph order: every ancestor of the tensors the LayerNorms read."""
    boundary = backbone_boundary(model)
    if not boundary:
        raise CalibError("the graph has no LayerNormalization node, so its backbone cannot be told from its flow head")
    producer = {out: n for n in model.graph.node for out in n.output}
    keep: set[int] = set()
    stack = list(boundary)
    while stack:
        n = producer.get(stack.pop())
        if n is None or id(n) in keep:
            continue
        keep.add(id(n))
        stack.extend(n.input)
    return [n for n in model.graph.node if id(n) in keep]


def backbone_submodel(model):
    """The backbone alone: ``model``'s input -> the tensors the LayerNorms read (as outputs).

    Works on FP32 and Q/DQ graphs alike (in a Q/DQ graph the LayerNorms may read
    DequantizeLinear outputs, which ``onnx.utils.Extractor`` cannot type)."""
    from onnx import helper

    nodes = backbone_nodes(model)
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(
        nodes,
        model.graph.name + "_backbone",
        list(model.graph.input),
        [helper.make_empty_tensor_value_info(t) for t in backbone_boundary(model)],
        [t for t in model.graph.initializer if t.name in used],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return sub


def find_quantizable_nodes(model, op_types: Sequence[str] = ("Conv",), scope: str = "backbone") -> list[str]:
    """Names of the nodes to quantize, in graph order.

    scope="backbone": nodes of ``op_types`` upstream of the LayerNormalization nodes (all
    ancestors of the tensors the norms read). scope="all": every node of ``op_types``.
    Raises CalibError when the graph has no LayerNormalization (not an ffrt FastFlow graph)
    or nothing matches.
    """
    if scope not in SCOPES:
        raise CalibError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    nodes = list(model.graph.node)
    if scope == "all":
        chosen = {n.name for n in nodes if n.op_type in op_types}
    else:
        try:
            chosen = {n.name for n in backbone_nodes(model) if n.op_type in op_types}
        except CalibError as e:
            raise CalibError(f"{e}; use scope 'all' (--scope all) to quantize every matching node") from e
    if not chosen:
        raise CalibError(f"no {'/'.join(op_types)} nodes found in scope {scope!r}; nothing to quantize")
    return [n.name for n in nodes if n.name in chosen]


def quantized_node_names(model, op_types: Sequence[str] = ("Conv",)) -> list[str]:
    """Nodes of ``op_types`` in a Q/DQ graph whose weight (input 1) or data input comes from DequantizeLinear."""
    producer = {out: n for n in model.graph.node for out in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in op_types and any(
            (p := producer.get(i)) is not None and p.op_type == "DequantizeLinear" for i in n.input[:2]
        ):
            out.append(n.name)
    return out


# -- onnxruntime helpers ---------------------------------------------------------------------


def make_session(path_or_bytes, threads: int | None = None):
    """An ONNX Runtime CPU session configured like ffrt's onnxruntime-cpu backend."""
    import onnxruntime as ort

    from ffrt.backends.onnxruntime import physical_core_count

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_core_count() or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, (str, os.PathLike)) else path_or_bytes
    return ort.InferenceSession(src, sess_options=options, providers=["CPUExecutionProvider"])


def score_images(session, images: np.ndarray, batch: int = 8, progress: bool = False, desc: str = "scoring") -> np.ndarray:
    """Image scores (float64 [N]) of uint8 NHWC ``images``."""
    from fftrain.progress import progress as progress_bar

    name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]
    score_name = "score" if "score" in out_names else out_names[-1]
    scores = []
    for i in progress_bar(range(0, len(images), batch), desc=desc, unit="batch", enabled=progress):
        (s,) = session.run([score_name], {name: images[i : i + batch]})
        scores.append(np.asarray(s, dtype=np.float64).reshape(-1))
    return np.concatenate(scores) if scores else np.zeros(0)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties), numpy only."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size != b.size or a.size < 2:
        raise ValueError("spearman needs two equally long samples of at least 2 values")

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(x.size)
        r[order] = np.arange(x.size, dtype=np.float64)
        sx = x[order]
        starts = np.r_[0, np.flatnonzero(sx[1:] != sx[:-1]) + 1]
        ends = np.r_[starts[1:], sx.size]
        for s, e in zip(starts, ends):
            if e - s > 1:
                r[order[s:e]] = (s + e - 1) / 2.0
        return r

    ra, rb = ranks(a), ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _image_threshold(model) -> float:
    """The stored image threshold of an ffrt model given as a path or serialized bytes."""
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else onnx.load_from_string(model)
    return meta_from_proto(proto).thresholds.image


def evaluate_accuracy(
    fp32_model,
    int8_models: dict,
    images: np.ndarray,
    labels=None,
    *,
    max_auroc_drop: float = DEFAULT_MAX_AUROC_DROP,
    min_spearman: float = DEFAULT_MIN_SPEARMAN,
    threads: int | None = None,
    progress: bool = True,
) -> Accuracy:
    """Score ``images`` with FP32 and each INT8 model (paths or serialized bytes) on ORT CPU and apply the gate."""
    # numpy-only metrics module of the trainer (no torch import): the one definition of AUROC.
    from fftrain.metrics import roc_auc

    labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels).astype(np.int64)
    if len(labels) != len(images):
        raise CalibError(f"{len(images)} validation images but {len(labels)} labels")
    if len(images) < 3:
        raise CalibError(f"the accuracy gate needs at least 3 validation images, got {len(images)}")
    both = 0 < labels.sum() < len(labels)
    fp = score_images(make_session(fp32_model, threads), images, progress=progress, desc="scoring FP32")
    fp_auc = roc_auc(labels, fp) if both else None
    fp_reject = fp > _image_threshold(fp32_model)
    encs = {}
    for name, model in int8_models.items():
        q = score_images(make_session(model, threads), images, progress=progress, desc=f"scoring int8-{name}")
        if not np.all(np.isfinite(q)):
            encs[name] = EncodingAccuracy(None, None, float("nan"), float("inf"), False)
            continue
        auc = roc_auc(labels, q) if both else None
        drop = (fp_auc - auc) if both else None
        rho = spearman(fp, q)
        ok = (rho >= min_spearman) and (drop is None or drop <= max_auroc_drop)
        agree = float(np.mean((q > _image_threshold(model)) == fp_reject))
        encs[name] = EncodingAccuracy(auc, drop, rho, float(np.max(np.abs(q - fp))), bool(ok), agree)
    return Accuracy(len(images), int(labels.sum()), fp_auc, encs, max_auroc_drop, min_spearman)


def benchmark(
    models: dict,
    input_hw: tuple[int, int],
    batches: Sequence[int] = (1, 8),
    threads: int | None = None,
    min_seconds: float = 2.0,
    min_runs: int = 5,
    progress: bool = True,
) -> list[Latency]:
    """Median latency per batch of each model (label -> path/bytes), same thread count, rounds interleaved.

    The first label is the reference for the speedup (put FP32 first). Random uint8 images:
    the graph's cost does not depend on pixel values.
    """
    from fftrain.progress import progress as progress_bar

    sessions = {k: make_session(v, threads) for k, v in models.items()}
    ref = next(iter(models))
    rng = np.random.default_rng(0)
    out = []
    for b in batches:
        x = rng.integers(0, 256, size=(b, input_hw[0], input_hw[1], 3), dtype=np.uint8)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():  # warm-up: arenas, kernel selection
            name = s.get_inputs()[0].name
            s.run(None, {name: x})
        t_start = time.perf_counter()
        bar = progress_bar(desc=f"benchmark batch {b}", unit="round", enabled=progress)
        while True:
            for k, s in sessions.items():
                name = s.get_inputs()[0].name
                t0 = time.perf_counter()
                s.run(None, {name: x})
                times[k].append(time.perf_counter() - t0)
            bar.update(1)
            n = len(times[ref])
            if n >= min_runs and time.perf_counter() - t_start >= min_seconds * len(sessions):
                break
        bar.close()
        ms = {k: float(np.median(v) * 1000.0) for k, v in times.items()}
        out.append(
            Latency(
                batch=b,
                ms_per_batch=ms,
                images_per_s={k: b * 1000.0 / v for k, v in ms.items()},
                speedup_vs_fp32={k: ms[ref] / v for k, v in ms.items() if k != ref},
            )
        )
    return out


# -- calibration ----------------------------------------------------------------------------------


class _Reader:
    """onnxruntime CalibrationDataReader over a uint8 image array."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int):
        self._name, self._images, self._batch = input_name, images, batch
        self._i = 0

    def get_next(self):
        if self._i >= len(self._images):
            return None
        chunk = self._images[self._i : self._i + self._batch]
        self._i += len(chunk)
        return {self._name: chunk}

    def rewind(self):
        self._i = 0

    def __iter__(self):  # noqa: D105 - some ORT versions iterate the reader
        while (item := self.get_next()) is not None:
            yield item

    def __len__(self):
        return -(-len(self._images) // self._batch)


#: quantize_static settings per target (activation type, weight type, extra_options).
ENCODINGS = {
    # TensorRT explicit quantization: symmetric int8, zero point 0, float bias, and Q/DQ on
    # the *inputs* of each quantized Conv only (TensorRT's placement advice: quantize the
    # inputs of weighted layers, let the builder fuse Conv + activation + the next layer's
    # Q). Quantizing the Conv output too would put a second, coarse Q/DQ on the pre-ReLU6
    # values, whose range is far wider than the [0, 6] the next layer sees.
    "tensorrt": ("QInt8", "QInt8", {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                    "OpTypesToExcludeOutputQuantization": ["Conv"]}),
    # ONNX Runtime x86: uint8 activations with zero points, int8 weights, int32 bias, outputs
    # quantized so ORT fuses QLinearConv; each ReLU6 Clip after a quantized Conv is folded
    # into that Conv's output Q (range [0, 6]-bounded, as TFLite fuses Conv+ReLU6).
    "cpu": ("QUInt8", "QInt8", {"ActivationSymmetric": False, "WeightSymmetric": True}),
}
#: Activation types folded into the preceding quantized Conv in the CPU encoding.
_CPU_FOLDED_ACTIVATIONS = ("Clip", "Relu")


#: Largest |quantized bias| allowed when a float bias may be quantized later (2^30: half of
#: int32, so rounding and accumulation keep clear of the limit).
_BIAS_INT32_HEADROOM = float(2**30)


def protect_float_bias(q_model, fp32_model) -> int:
    """Raise per-channel weight scales so a float Conv bias survives int32 quantization.

    The TensorRT encoding keeps Conv biases in float. ONNX Runtime's graph optimizer
    (``WeightBiasQuantization``, microsoft/onnxruntime PR #22889) nevertheless quantizes
    such a bias to int32 at load time with scale input_scale * weight_scale. BN folding
    leaves "dead" channels (weights ~1e-6, bias ~1-7) whose tiny weight scale makes that
    int32 overflow and saturate: measured on the ELPV demo model, backbone feature error
    rose from 16-24% to 82-96%. The quantization tool guards its own int32 bias the same
    way (PR #22020); this does it for the float-bias encoding: where |bias| / (s_in * s_w)
    would exceed 2^30 the channel's weight scale is raised to fit and its weights
    re-quantized from the FP32 values (they round to ~0: the channel's output is its bias
    anyway). Returns the number of channels changed.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in q_model.graph.initializer}
    fp32_weight = {n.name: n.input[1] for n in fp32_model.graph.node if n.op_type == "Conv"}
    fp32_inits = {t.name: t for t in fp32_model.graph.initializer}
    producer = {o: n for n in q_model.graph.node for o in n.output}
    changed = 0
    for conv in q_model.graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 3 or conv.input[2] not in inits:
            continue
        dq_x, dq_w = producer.get(conv.input[0]), producer.get(conv.input[1])
        if not (dq_x and dq_w and dq_x.op_type == "DequantizeLinear" and dq_w.op_type == "DequantizeLinear"):
            continue
        bias = inits[conv.input[2]]
        if bias.data_type != TensorProto.FLOAT or dq_x.input[1] not in inits or dq_w.input[1] not in inits:
            continue
        s_x = float(numpy_helper.to_array(inits[dq_x.input[1]]).reshape(-1)[0])
        s_w = numpy_helper.to_array(inits[dq_w.input[1]]).astype(np.float64).reshape(-1)
        b = np.abs(numpy_helper.to_array(bias).astype(np.float64))
        need = b / (s_x * _BIAS_INT32_HEADROOM)
        low = s_w < need
        if not low.any():
            continue
        w_name = fp32_weight.get(conv.name)
        if w_name not in fp32_inits:
            raise CalibError(f"{conv.name}: its FP32 weight is not in the source graph; cannot re-quantize it")
        w = numpy_helper.to_array(fp32_inits[w_name]).astype(np.float64)
        new_scale = np.where(low, need, s_w)
        shape = (-1,) + (1,) * (w.ndim - 1)
        q_old = numpy_helper.to_array(inits[dq_w.input[0]])
        q_new = np.where(low.reshape(shape), np.clip(np.round(w / new_scale.reshape(shape)), -127, 127), q_old)
        inits[dq_w.input[0]].CopyFrom(numpy_helper.from_array(q_new.astype(q_old.dtype), dq_w.input[0]))
        inits[dq_w.input[1]].CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), dq_w.input[1]))
        changed += int(low.sum())
    return changed


def _encode(src: Path, dst: Path, target: str, cache: Path, nodes, op_types, method_enum, extra_options):
    """One quantize_static call from the cached ranges (no calibration) -> the Q/DQ ModelProto."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    act, weight, target_options = ENCODINGS[target]
    op_types, nodes = list(op_types), list(nodes)
    source = onnx.load(str(src))
    if target == "cpu":
        producer = {o: n for n in source.graph.node for o in n.output}
        chosen = set(nodes)
        folded = [n for n in source.graph.node if n.op_type in _CPU_FOLDED_ACTIVATIONS
                  and (p := producer.get(n.input[0])) is not None and p.name in chosen]
        op_types += sorted({n.op_type for n in folded} - set(op_types))
        nodes += [n.name for n in folded]
    ort_logger = logging.getLogger()
    level = ort_logger.level
    ort_logger.setLevel(logging.ERROR)  # "consider pre-processing": the export is already optimized
    try:
        quantize_static(
            str(src),
            str(dst),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=True,
            reduce_range=False,
            nodes_to_quantize=nodes,
            calibrate_method=method_enum,
            calibration_cache_path=str(cache),
            activation_type=getattr(QuantType, act),
            weight_type=getattr(QuantType, weight),
            extra_options={**(extra_options or {}), **target_options},
        )
    finally:
        ort_logger.setLevel(level)
    q = onnx.load(str(dst))
    protect_float_bias(q, source)
    return q


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    if method not in table:
        raise CalibError(f"calibration method must be one of {', '.join(METHODS)}, not {method!r}")
    return table[method]


def _as_images(images, meta: ModelMeta, count: int | None, progress: bool, what: str) -> np.ndarray:
    spec = meta.input
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (spec.height, spec.width, 3):
            raise CalibError(
                f"{what} images must be uint8 [N,{spec.height},{spec.width},3] RGB at the model size, "
                f"got {images.dtype} {list(images.shape)}"
            )
        arr = images if not count else images[[int(i) for i in np.linspace(0, len(images) - 1, min(count, len(images))).round()]]
        if len(arr) == 0:
            raise CalibError(f"no {what} images")
        return arr
    paths = [Path(p) for p in images]
    if not paths:
        raise CalibError(f"no {what} images")
    return load_images(sample_evenly(paths, count), spec, progress, desc=f"loading {what} images")


def quantize_model(
    fp32_onnx_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    calib_images,
    *,
    method: str = "minmax",
    count: int | None = 64,
    op_types: Sequence[str] = ("Conv",),
    scope: str = "backbone",
    val_images=None,
    val_labels=None,
    val_source: str = "",
    max_auroc_drop: float = DEFAULT_MAX_AUROC_DROP,
    min_spearman: float | None = None,
    force: bool = False,
    benchmark_batches: Sequence[int] = (1, 8),
    threads: int | None = None,
    calib_batch: int = 8,
    progress: bool = True,
    nodes: Sequence[str] | None = None,
    extra_options: dict | None = None,
    refit_head: "Callable[[str, bytes], onnx.ModelProto] | None" = None,
) -> Int8Report:
    """Calibrate once, write ``out_dir/model.int8-trt.onnx`` and ``out_dir/model.int8-cpu.onnx``.

    calib_images:  uint8 [N,H,W,3] RGB array at the model size, or image paths (decoded
                   and resized like ffrt.Detector does); ``count`` of them are used, spread
                   evenly (None/0 = all).
    method:        "minmax" | "entropy" | "percentile" (onnxruntime calibrators).
    op_types, scope: which nodes get Q/DQ ("backbone" = upstream of the LayerNorms, "all").
    val_images, val_labels: the accuracy gate's set (array or paths; labels 0/1, None = all
                   normal -> rank correlation only). None skips the gate. Use validation data,
                   not the test split (ffcalib int8's default: held-out training normals plus
                   synthetic defects, see ffcalib.images.gate_images).
    val_source:    what the gate set is, for the report.
    benchmark_batches: batch sizes at which FP32 and int8-cpu are timed on this CPU
                   (same thread count); () skips the benchmark.
    nodes:         explicit node names to quantize (overrides op_types/scope selection;
                   calibration still runs on the ``scope`` subgraph).
    extra_options: more onnxruntime ``quantize_static`` extra_options for both encodings
                   (e.g. {"OpTypesToExcludeOutputQuantization": ["Conv"]}).
    refit_head:    (target, Q/DQ model bytes) -> FP32 ModelProto of the same network whose
                   flow head was re-fit on that Q/DQ backbone's features (and whose metadata
                   carries re-calibrated thresholds and ``head_fit``). The same Q/DQ, from the
                   same ranges, is then put on that graph. ffexport supplies it (it needs the
                   checkpoint and PyTorch); None = plain post-training quantization.
    min_spearman:  gate bound; None = DEFAULT_MIN_SPEARMAN, or DEFAULT_MIN_SPEARMAN_REFIT
                   when ``refit_head`` is given.
    Raises CalibError (one-line message) on bad input, AccuracyGateError when the gate
    fails and ``force`` is False (then nothing is written).
    """
    import onnx
    from onnxruntime.quantization import create_calibrator, save_tensors_data

    fp32_onnx_path = Path(fp32_onnx_path)
    out_dir = Path(out_dir)
    try:
        meta = read_onnx_meta(fp32_onnx_path)
    except ModelFileError as e:
        raise CalibError(str(e)) from e
    if meta.precision != "fp32":
        raise CalibError(f"{fp32_onnx_path}: is a {meta.precision} model; quantize the FP32 model ffexport wrote")
    method_enum = _method_enum(method)
    op_types = tuple(op_types)
    if min_spearman is None:
        min_spearman = DEFAULT_MIN_SPEARMAN if refit_head is None else DEFAULT_MIN_SPEARMAN_REFIT
    calib = _as_images(calib_images, meta, count, progress, "calibration")

    model = onnx.load(str(fp32_onnx_path))
    _ensure_node_names(model)
    nodes = list(nodes) if nodes else find_quantizable_nodes(model, op_types, scope)
    input_name = model.graph.input[0].name

    with tempfile.TemporaryDirectory(prefix="ffcalib.") as tmp:
        tmp = Path(tmp)
        fp32_named = tmp / "fp32.onnx"
        onnx.save(model, str(fp32_named))

        # -- the one calibration pass --------------------------------------------------------
        t0 = time.perf_counter()
        calib_model = fp32_named
        if scope == "backbone":
            # Only the backbone needs ranges: calibrate its subgraph (input -> LayerNorm inputs).
            calib_model = tmp / "backbone.onnx"
            onnx.save(backbone_submodel(model), str(calib_model))
        calib_options = {"symmetric": False}
        calibrator = create_calibrator(
            calib_model,
            list(op_types) + [t for t in _CPU_FOLDED_ACTIVATIONS if t not in op_types],
            augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=method_enum,
            extra_options=calib_options,
        )
        # Fed in chunks of a few batches: each collect_data call reduces what it saw into the
        # running ranges / histograms and frees the intermediate outputs (its
        # max_intermediate_outputs option drops data instead of merging it in ORT 1.32), so
        # memory stays bounded whatever the image count.
        from fftrain.progress import progress as progress_bar

        step = calib_batch * 2
        for i in progress_bar(range(0, len(calib), step), desc="calibrating", unit="chunk", enabled=progress):
            calibrator.collect_data(_Reader(input_name, calib[i : i + step], calib_batch))
        ranges = calibrator.compute_data()
        del calibrator
        cache = tmp / "calibration.json"
        save_tensors_data(ranges, cache)
        calib_s = time.perf_counter() - t0

        # -- two encodings from the same ranges ---------------------------------------------------
        t0 = time.perf_counter()
        blobs: dict[str, bytes] = {}
        head_fit: dict[str, str] = {}
        quantized: list[str] = []
        for target in ENCODINGS:
            q = _encode(fp32_named, tmp / f"{target}.onnx", target, cache, nodes, op_types, method_enum, extra_options)
            file_meta = meta
            if refit_head is not None:
                # The flows were fit on FP32 features; INT8 features differ by ~15-25% (RMS) and
                # the density model reads that as anomaly. Re-fit the flows on the features of
                # this very Q/DQ backbone, then put the same Q/DQ (same ranges) on the new graph.
                refit = refit_head(target, q.SerializeToString())
                _ensure_node_names(refit)
                refit_path = tmp / f"{target}.refit-fp32.onnx"
                onnx.save(refit, str(refit_path))
                q = _encode(refit_path, tmp / f"{target}.onnx", target, cache, nodes, op_types, method_enum, extra_options)
                if set(quantized_node_names(q, op_types)) != set(nodes):
                    raise CalibError(
                        "the graph with the re-fitted head does not have the quantized backbone's node names; "
                        "export it with the same ffexport version as the FP32 model"
                    )
                file_meta = meta_from_proto(refit, where=f"re-fitted {target} graph")
                head_fit[target] = file_meta.head_fit
            if target == "cpu":
                quantized = quantized_node_names(q, op_types)
            versions = dict(file_meta.tool_versions)
            versions["onnxruntime"] = _ort_version()
            set_proto_meta(q, file_meta.model_copy(update={"precision": "int8", "target": target, "tool_versions": versions}))
            blobs[target] = q.SerializeToString()
        quantize_s = time.perf_counter() - t0

    by_type: dict[str, int] = {}
    names = set(quantized)
    type_of = {n.name: n.op_type for n in model.graph.node}
    for n in quantized:
        by_type[type_of.get(n, "?")] = by_type.get(type_of.get(n, "?"), 0) + 1
    left: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in op_types and n.name not in names:
            left[n.op_type] = left.get(n.op_type, 0) + 1

    from ffrt.backends.onnxruntime import physical_core_count

    report = Int8Report(
        fp32_path=str(fp32_onnx_path),
        outputs={"tensorrt": "", "cpu": ""},
        method=method,
        calib_images=len(calib),
        op_types=op_types,
        scope=scope,
        quantized_nodes=quantized,
        quantized_by_type=by_type,
        float_nodes_by_type=left,
        calib_seconds=calib_s,
        quantize_seconds=quantize_s,
        head_fit=head_fit,
        threads=threads or physical_core_count(),
        forced=force,
    )
    if val_images is not None:
        val = _as_images(val_images, meta, None, progress, "validation")
        report.accuracy = evaluate_accuracy(
            fp32_onnx_path,
            blobs,
            val,
            val_labels,
            max_auroc_drop=max_auroc_drop,
            min_spearman=min_spearman,
            threads=threads,
            progress=progress,
        )
        report.accuracy.source = val_source
    if benchmark_batches:
        report.latency = benchmark(
            {"fp32": fp32_onnx_path, "int8-cpu": blobs["cpu"]},
            (meta.input.height, meta.input.width),
            benchmark_batches,
            threads,
            progress=progress,
        )
    if report.accuracy is not None and not report.accuracy.passed and not force:
        bad = [
            f"int8-{k}: "
            + (f"AUROC drop {e.auroc_drop:+.4f} (max {max_auroc_drop}), " if e.auroc_drop is not None else "")
            + f"Spearman {e.spearman:.4f} (min {min_spearman})"
            for k, e in report.accuracy.encodings.items()
            if not e.passed
        ]
        raise AccuracyGateError(
            "INT8 accuracy gate failed (" + "; ".join(bad) + "); nothing written. "
            + (
                "Use more/representative calibration images or another --calib-method"
                if refit_head is not None
                else "FastFlow's flow head reads INT8 feature error as anomaly: `ffexport --ckpt model.pt --out DIR "
                "--int8` re-fits the head on the INT8 backbone (needs the checkpoint)"
            )
            + "; --force writes anyway",
            report,
        )
    paths = {"tensorrt": out_dir / TRT_NAME, "cpu": out_dir / CPU_NAME}
    write_all_or_none({paths[t]: blobs[t] for t in paths})
    report.outputs.update({t: str(p) for t, p in paths.items()})
    report.written = True
    return report


def write_all_or_none(files: dict[Path, bytes]) -> None:
    """Write every file to a temp name next to it (fsynced), then rename them all.

    A failure while writing (disk full, Ctrl-C) leaves every old file in place; the renames
    come only after all bytes are on disk.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

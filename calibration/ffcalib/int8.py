"""INT8 post-training quantization of an exported ffrt model: one calibration, two encodings.

    from ffcalib.int8 import quantize_model
    report = quantize_model("model.onnx", "out/", calib_paths, val_images=paths, val_labels=labels)

writes
- ``out/model.int8-trt.onnx`` (metadata target "tensorrt"): Q/DQ, symmetric int8
  activations and weights, zero point 0, per-channel weight scales, bias left in float:
  the explicit-quantization form TensorRT consumes.
- ``out/model.int8-cpu.onnx`` (metadata target "cpu"): Q/DQ, uint8 activations with zero
  points, per-channel int8 weights (int32 bias): the U8S8 form ONNX Runtime's x86
  VNNI kernels are fast on. (Symmetric S8S8 Q/DQ measured *slower* than FP32 on this
  CPU, see DESIGN.md: never ship the -trt file to CPUs; the Detector warns if you do.)

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
Runtime on this CPU; image AUROC may not drop by more than ``max_auroc_drop`` (when the
set has both classes) and the Spearman rank correlation of the INT8 scores with the FP32
scores must be at least ``min_spearman``. If the gate fails (and ``force`` is False) the
files are NOT written and :class:`AccuracyGateError` carries the report.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ffrt.errors import ModelFileError
from ffrt.meta import ModelMeta, atomic_write_bytes, read_onnx_meta, set_proto_meta

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


@dataclass
class Accuracy:
    images: int
    defects: int
    fp32_auroc: float | None
    encodings: dict[str, EncodingAccuracy]
    max_auroc_drop: float
    min_spearman: float

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
        a = self.accuracy
        if a is not None:
            fp = f"{a.fp32_auroc:.4f}" if a.fp32_auroc is not None else "n/a (one class)"
            lines.append(f"  accuracy on {a.images} validation images ({a.defects} defective): FP32 AUROC {fp}")
            for name, e in a.encodings.items():
                au = f"AUROC {e.auroc:.4f} (drop {e.auroc_drop:+.4f}), " if e.auroc is not None else ""
                lines.append(
                    f"    int8-{name:<8} {au}Spearman vs FP32 {e.spearman:.4f}, max |score diff| "
                    f"{e.max_abs_score_diff:.4g}  {'ok' if e.passed else 'FAILED'}"
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
        boundary = backbone_boundary(model)
        if not boundary:
            raise CalibError(
                "the graph has no LayerNormalization node, so its backbone cannot be told from its flow head; "
                "use scope 'all' (--scope all) to quantize every matching node"
            )
        producer = {out: n for n in nodes for out in n.output}
        upstream: set[str] = set()
        stack = list(boundary)
        while stack:
            t = stack.pop()
            n = producer.get(t)
            if n is None or n.name in upstream:
                continue
            upstream.add(n.name)
            stack.extend(n.input)
        chosen = {n.name for n in nodes if n.name in upstream and n.op_type in op_types}
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
    from tqdm import tqdm

    name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]
    score_name = "score" if "score" in out_names else out_names[-1]
    scores = []
    for i in tqdm(range(0, len(images), batch), desc=desc, unit="batch", disable=not progress, leave=False):
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
        encs[name] = EncodingAccuracy(auc, drop, rho, float(np.max(np.abs(q - fp))), bool(ok))
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
    from tqdm import tqdm

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
        bar = tqdm(desc=f"benchmark batch {b}", unit="round", disable=not progress, leave=False)
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
    max_auroc_drop: float = DEFAULT_MAX_AUROC_DROP,
    min_spearman: float = DEFAULT_MIN_SPEARMAN,
    force: bool = False,
    benchmark_batches: Sequence[int] = (1, 8),
    threads: int | None = None,
    calib_batch: int = 8,
    progress: bool = True,
    nodes: Sequence[str] | None = None,
    extra_options: dict | None = None,
) -> Int8Report:
    """Calibrate once, write ``out_dir/model.int8-trt.onnx`` and ``out_dir/model.int8-cpu.onnx``.

    calib_images:  uint8 [N,H,W,3] RGB array at the model size, or image paths (decoded
                   and resized like ffrt.Detector does); ``count`` of them are used, spread
                   evenly (None/0 = all).
    method:        "minmax" | "entropy" | "percentile" (onnxruntime calibrators).
    op_types, scope: which nodes get Q/DQ ("backbone" = upstream of the LayerNorms, "all").
    val_images, val_labels: the accuracy gate's set (array or paths; labels 0/1, None = all
                   normal -> rank correlation only). None skips the gate.
    benchmark_batches: batch sizes at which FP32 and int8-cpu are timed on this CPU
                   (same thread count); () skips the benchmark.
    nodes:         explicit node names to quantize (overrides op_types/scope selection;
                   calibration still runs on the ``scope`` subgraph).
    extra_options: more onnxruntime ``quantize_static`` extra_options for both encodings
                   (e.g. {"OpTypesToExcludeOutputQuantization": ["Conv"]}).
    Raises CalibError (one-line message) on bad input, AccuracyGateError when the gate
    fails and ``force`` is False (then nothing is written).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, create_calibrator, quantize_static, save_tensors_data

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
            onnx.utils.extract_model(str(fp32_named), str(calib_model), [input_name], backbone_boundary(model))
        calib_options = {"symmetric": False}
        calibrator = create_calibrator(
            calib_model,
            list(op_types),
            augmented_model_path=str(tmp / "augmented.onnx"),
            calibrate_method=method_enum,
            extra_options=calib_options,
        )
        # Fed in chunks of a few batches: each collect_data call reduces what it saw into the
        # running ranges / histograms and frees the intermediate outputs (its
        # max_intermediate_outputs option drops data instead of merging it in ORT 1.32), so
        # memory stays bounded whatever the image count.
        from tqdm import tqdm

        step = calib_batch * 2
        for i in tqdm(range(0, len(calib), step), desc="calibrating", unit="chunk", disable=not progress, leave=False):
            calibrator.collect_data(_Reader(input_name, calib[i : i + step], calib_batch))
        ranges = calibrator.compute_data()
        del calibrator
        cache = tmp / "calibration.json"
        save_tensors_data(ranges, cache)
        calib_s = time.perf_counter() - t0

        # -- two encodings from the same ranges ---------------------------------------------------
        t0 = time.perf_counter()
        encodings = {
            "tensorrt": dict(
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            ),
            "cpu": dict(
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            ),
        }
        blobs: dict[str, bytes] = {}
        quantized: list[str] = []
        ort_logger = logging.getLogger()
        for target, kw in encodings.items():
            dst = tmp / f"{target}.onnx"
            level = ort_logger.level
            ort_logger.setLevel(logging.ERROR)  # "consider pre-processing": the export is already optimized
            try:
                quantize_static(
                    str(fp32_named),
                    str(dst),
                    calibration_data_reader=None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(op_types),
                    per_channel=True,
                    reduce_range=False,
                    nodes_to_quantize=nodes,
                    calibrate_method=method_enum,
                    calibration_cache_path=str(cache),
                    activation_type=kw["activation_type"],
                    weight_type=kw["weight_type"],
                    extra_options={**(extra_options or {}), **kw["extra_options"]},
                )
            finally:
                ort_logger.setLevel(level)
            q = onnx.load(str(dst))
            if target == "cpu":
                quantized = quantized_node_names(q, op_types)
            versions = dict(meta.tool_versions)
            versions["onnxruntime"] = _ort_version()
            set_proto_meta(q, meta.model_copy(update={"precision": "int8", "target": target, "tool_versions": versions}))
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
            "INT8 accuracy gate failed (" + "; ".join(bad) + "); nothing written. Use more/representative "
            "calibration images, another --calib-method, or --force to write anyway",
            report,
        )
    for target, name in (("tensorrt", TRT_NAME), ("cpu", CPU_NAME)):
        path = out_dir / name
        atomic_write_bytes(path, blobs[target])
        report.outputs[target] = str(path)
    report.written = True
    return report


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

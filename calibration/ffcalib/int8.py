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
  (Symmetric S8S8 Q/DQ runs *slower* than FP32 on x86 CPUs, benchmarks/README.md: never ship
  the -trt file to CPUs; the Detector warns if you do.)

FastFlow needs one more step that plain post-training quantization lacks: its flow head
must be re-fit on the INT8 backbone's features. ffexport does it (it has the checkpoint):
it calls :func:`calibrate`, :func:`encode` per target, re-fits the head on that Q/DQ
backbone (export/ffexport/int8_head.py), then ``quantize_model(..., calibration=...,
sources=...)``, which puts the same Q/DQ on the re-fit graphs, gates and writes them.

Jobs by module: encode.py (the calibration pass, the encodings, bias protection),
graph.py (backbone and node analysis), gate.py (scoring, the accuracy gate, latency),
report.py (report types); this module runs them in order.

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

import datetime as _dt
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ffcore.files import write_all_or_none
from ffcore.ort import physical_core_count
from ffrt.backends.cpuchoice import cpu_signature
from ffrt.errors import ModelFileError
from ffrt.meta import ModelMeta, PrecisionGate
from ffrt.metafile import meta_from_proto, read_onnx_meta, set_proto_meta

from .encode import ENCODINGS, METHODS, Calibration, _ort_version, calibrate, encode  # noqa: F401
from .gate import (  # noqa: F401
    DEFAULT_MAX_AUROC_DROP,
    DEFAULT_MIN_SPEARMAN,
    DEFAULT_MIN_SPEARMAN_REFIT,
    benchmark,
    evaluate_accuracy,
    score_images,
)
from .graph import (  # noqa: F401
    SCOPES,
    backbone_boundary,
    backbone_nodes,
    backbone_submodel,
    find_quantizable_nodes,
    quantized_node_names,
)
from .images import CalibError, load_images, sample_evenly
from .report import Accuracy, AccuracyGateError, EncodingAccuracy, Int8Report, Latency  # noqa: F401

TRT_NAME = "model.int8-trt.onnx"
CPU_NAME = "model.int8-cpu.onnx"


def as_images(images, meta: ModelMeta, count: int | None, progress: bool, what: str) -> np.ndarray:
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


def int8_gates(accuracy: Accuracy, scope: str, reference: str, refit: bool) -> dict[str, PrecisionGate]:
    """The gate record of each encoding, for its file's metadata (``ModelMeta.precision_gates``)."""
    against = (f"{reference} (the FP32 model this file's head was re-fit from)" if refit else reference)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    gates = {}
    for target, e in accuracy.encodings.items():
        finite = bool(np.isfinite(e.spearman))
        gates[target] = PrecisionGate(
            precision="int8", keep_fp32="head" if scope == "all" else "flows", passed=bool(e.passed and finite),
            images=accuracy.images, defective=accuracy.defects, data=accuracy.source or "validation images",
            spearman=float(e.spearman) if finite else -1.0, auroc_fp32=accuracy.fp32_auroc, auroc=e.auroc,
            nonfinite=0 if finite else 1,
            bounds={"max_auroc_drop": accuracy.max_auroc_drop, "min_spearman": accuracy.min_spearman},
            reference=f"{against} on onnxruntime-cpu",
            runtime=f"onnxruntime {_ort_version()} on {cpu_signature()}", checked_at=now)
    return gates


def _fp32_meta(path: Path) -> ModelMeta:
    try:
        meta = read_onnx_meta(path)
    except ModelFileError as e:
        raise CalibError(str(e)) from e
    if meta.precision != "fp32":
        raise CalibError(f"{path}: is a {meta.precision} model; quantize the FP32 model ffexport wrote")
    return meta


def quantize_model(
    fp32_onnx_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    calib_images=None,
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
    calibration: Calibration | None = None,
    sources: Mapping | None = None,
) -> Int8Report:
    """Calibrate once, write ``out_dir/model.int8-trt.onnx`` and ``out_dir/model.int8-cpu.onnx``.

    calib_images:  uint8 [N,H,W,3] RGB array at the model size, or image paths (decoded
                   and resized like ffrt.Detector does); ``count`` of them are used, spread
                   evenly (None/0 = all). Not needed when ``calibration`` is given.
    method:        "minmax" | "entropy" | "percentile" (onnxruntime calibrators).
    op_types, scope: which nodes get Q/DQ ("backbone" = upstream of the LayerNorms, "all").
    val_images, val_labels: the accuracy gate's set (array or paths; labels 0/1, None = all
                   normal -> rank correlation only). None skips the gate. Use validation data,
                   not the test split (ffcalib int8's default: held-out training normals plus
                   synthetic defects, see ffcalib.images.gate_set).
    val_source:    what the gate set is, for the report.
    benchmark_batches: batch sizes at which FP32 and int8-cpu are timed on this CPU
                   (same thread count); () skips the benchmark.
    nodes:         explicit node names to quantize (overrides op_types/scope selection;
                   calibration still runs on the ``scope`` subgraph).
    extra_options: more onnxruntime ``quantize_static`` extra_options for both encodings
                   (e.g. {"OpTypesToExcludeOutputQuantization": ["Conv"]}).
    calibration:   a :func:`calibrate` result of this model to reuse (ffexport calibrates
                   first, re-fits the heads, then calls this), or one per target (target ->
                   Calibration of that target's ``sources`` graph: its own flows' ranges when
                   the flows are quantized too); None = calibrate here.
    sources:       target -> FP32 ModelProto of the same network whose flow head was re-fit
                   on that target's Q/DQ backbone (metadata with re-calibrated thresholds
                   and ``head_fit``); the same Q/DQ, from the same ranges, is put on it.
                   None = plain post-training quantization of the FP32 model.
    min_spearman:  gate bound; None = DEFAULT_MIN_SPEARMAN, or DEFAULT_MIN_SPEARMAN_REFIT
                   with ``sources``.
    Raises CalibError (one-line message) on bad input, AccuracyGateError when the gate
    fails and ``force`` is False (then nothing is written).
    """
    fp32_onnx_path = Path(fp32_onnx_path)
    out_dir = Path(out_dir)
    meta = _fp32_meta(fp32_onnx_path)
    if min_spearman is None:
        min_spearman = DEFAULT_MIN_SPEARMAN if sources is None else DEFAULT_MIN_SPEARMAN_REFIT
    if calibration is None:
        calib = as_images(calib_images, meta, count, progress, "calibration")
        calibration = calibrate(fp32_onnx_path, calib, method=method, op_types=op_types, scope=scope, nodes=nodes,
                                batch=calib_batch, progress=progress)
    t0 = time.perf_counter()
    blobs: dict[str, bytes] = {}
    protos: dict = {}
    metas: dict[str, ModelMeta] = {}
    head_fit: dict[str, str] = {}
    per_target = calibration if isinstance(calibration, Mapping) else {t: calibration for t in ENCODINGS}
    calibration = per_target["cpu"]
    for target in ENCODINGS:
        source = None if sources is None else sources[target]
        q = encode(per_target[target], target, source, extra_options)
        file_meta = meta
        if source is not None:
            file_meta = meta_from_proto(source, where=f"re-fitted {target} graph")
            head_fit[target] = file_meta.head_fit
        versions = dict(file_meta.tool_versions)
        versions["onnxruntime"] = _ort_version()
        metas[target] = file_meta.model_copy(update={"precision": "int8", "target": target, "tool_versions": versions})
        set_proto_meta(q, metas[target])
        protos[target], blobs[target] = q, q.SerializeToString()
        if target == "cpu":
            quantized = quantized_node_names(q, calibration.op_types)
    quantize_s = time.perf_counter() - t0

    model = calibration.model
    by_type: dict[str, int] = {}
    names = set(quantized)
    type_of = {n.name: n.op_type for n in model.graph.node}
    for n in quantized:
        by_type[type_of.get(n, "?")] = by_type.get(type_of.get(n, "?"), 0) + 1
    left: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type in calibration.op_types and n.name not in names:
            left[n.op_type] = left.get(n.op_type, 0) + 1

    report = Int8Report(
        fp32_path=str(fp32_onnx_path),
        outputs={"tensorrt": "", "cpu": ""},
        method=calibration.method,
        calib_images=calibration.images,
        op_types=calibration.op_types,
        scope=scope,
        quantized_nodes=quantized,
        quantized_by_type=by_type,
        float_nodes_by_type=left,
        calib_seconds=calibration.seconds,
        quantize_seconds=quantize_s,
        head_fit=head_fit,
        threads=threads or physical_core_count(),
        forced=force,
    )
    if val_images is not None:
        val = as_images(val_images, meta, None, progress, "validation")
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
        # The gate goes into each file: "auto" runs an INT8 file beside model.onnx only on a
        # passed one (ffrt.backends.variants), and `ffrt info` shows it.
        for target, gate in int8_gates(report.accuracy, scope, fp32_onnx_path.name, sources is not None).items():
            set_proto_meta(protos[target], metas[target].model_copy(update={"precision_gates": (gate,)}))
            blobs[target] = protos[target].SerializeToString()
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
                if sources is not None
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

"""``int8``: model.int8-trt.onnx and model.int8-cpu.onnx from the staged FP32 file.

Through ffcalib's library (the same steps, defaults and gate as ``ffcalib int8``), with each
INT8 file's flow head re-fit on its INT8 backbone (int8_head.py explains why): calibrate once,
encode each target, re-fit its head, then encode the re-fit graph from the same ranges, gate
and write.
"""

from __future__ import annotations

from ffcalib.images import gate_set
from ffcalib.int8 import (
    CPU_NAME,
    DEFAULT_MAX_AUROC_DROP,
    ENCODINGS,
    TRT_NAME,
    AccuracyGateError,
    Int8Report,
    as_images,
    calibrate,
    encode,
    quantize_model,
)
from ffrt.metafile import read_onnx_meta
from fftrain.data import DataError, resolve

from .fp32_step import FP32_NAME
from .int8_head import DEFAULT_REFIT_EPOCHS, head_refitter
from .report import ExportStatus, GateVerdict
from .request import ExportRequest
from .step import Made, MadeFile, StepOutcome, refused

#: File name of each encoding ffcalib writes.
NAMES = {"tensorrt": TRT_NAME, "cpu": CPU_NAME}


def int8_step(request: ExportRequest, made: Made) -> StepOutcome:
    data = made.payload.get("train_info", {}).get("data")
    calib = request.calib or data
    if not calib:
        return refused("--int8 needs --calib DIR (normal images from the line)")
    epochs = DEFAULT_REFIT_EPOCHS if request.refit_epochs is None else request.refit_epochs
    refit = None
    if epochs > 0:
        try:
            split = resolve(str(calib))
        except DataError as e:
            return refused(f"--int8 re-fits the flow head on the training normals, from {calib}: {e}. Pass --calib "
                           "with the training data (an MVTec-style root or elpv:mono/poly), or --refit-epochs 0 for "
                           "plain post-training quantization")
        refit = head_refitter(request.ckpt, split, made.parity_images, epochs=epochs, batch_max=request.batch_max,
                              opset=request.opset)
    fp32_path = made.path(FP32_NAME)
    meta = read_onnx_meta(fp32_path)
    calib_paths, val_images, val_labels, val_source = gate_set(str(calib), meta.input)
    images = as_images(calib_paths, meta, request.calib_count or None, True, "calibration")
    whole = request.int8_scope == "all"
    # Without a re-fit the FP32 graph is what gets quantized: one calibration over the scope.
    method = request.calib_method
    cal = calibrate(fp32_path, images, method=method, scope="all" if whole and refit is None else "backbone")
    sources = None
    if refit is not None:
        # The flows were fit on FP32 features; INT8 features differ, and the density model reads
        # that as anomaly. Re-fit the flows on the features of each target's very Q/DQ backbone;
        # quantize_model then puts the same Q/DQ (same ranges) on the re-fit graph.
        sources = {t: refit(t, encode(cal, t).SerializeToString()) for t in ENCODINGS}
        if whole:
            # The flows' ranges must be those of the flows that ship: each target's re-fit graph
            # is calibrated whole, on the same images.
            cal = {t: calibrate(sources[t], images, method=method, scope="all") for t in ENCODINGS}
    try:
        report = quantize_model(fp32_path, fp32_path.parent, calibration=cal, sources=sources,
                                scope=request.int8_scope, val_images=val_images, val_labels=val_labels,
                                val_source=val_source, max_auroc_drop=DEFAULT_MAX_AUROC_DROP,
                                min_spearman=request.min_spearman, force=request.force)
    except AccuracyGateError as e:
        print(e.report.summary())
        return refused(" ".join(str(e).split()), ExportStatus.GATE_FAILED)
    print(report.summary())
    extra = {"tensorrt": (), "cpu": _gate_float_parts_in_bf16(request, made.path(CPU_NAME), fp32_path,
                                                              (val_images, val_labels, val_source))}
    files = tuple(MadeFile(NAMES[t], "int8", read_onnx_meta(made.path(NAMES[t])), _verdicts(report, t) + extra[t])
                  for t in ENCODINGS)
    return StepOutcome(files=files, engine_source=TRT_NAME)


def _gate_float_parts_in_bf16(request: ExportRequest, cpu_path, fp32_path, gate_data) -> tuple[GateVerdict, ...]:
    """Where this machine computes BF16 natively, gate the CPU INT8 file with its float parts in
    BF16 on OpenVINO (the anomaly head FP32) against model.onnx, and record the gate in it, so
    that ``precision="auto"`` runs it that way: with every convolution INT8 it is the fastest
    CPU path measured on a VNNI CPU (benchmarks/README.md). Nothing here stops the export: where
    BF16 cannot run or its gate fails, the float parts run in FP32 and one line says why."""
    from ffcalib.bf16 import bf16_gate, record_gate
    from ffrt.backends.openvino import bf16_problem

    from .orchestrate import expected_errors, one_line

    if request.bf16 is False:
        return ()
    missing = bf16_problem()
    if missing is not None:
        print(f"{CPU_NAME}: float parts stay FP32: {missing}")
        return ()
    images, labels, source = gate_data
    try:
        meta = read_onnx_meta(cpu_path)
        gate = bf16_gate(cpu_path, as_images(images, meta, None, True, "gate"), labels, source, keep_fp32="head",
                         reference=fp32_path)
        record_gate(cpu_path, gate)
    except expected_errors() as e:
        print(f"{CPU_NAME}: float parts stay FP32: the BF16 gate could not run: {one_line(e)}")
        return ()
    print(f"{CPU_NAME} with its float parts in BF16: {gate.summary()}"
          + ("" if gate.passed else " (recorded: it runs with FP32 float parts)"))
    return (GateVerdict(check=f"float parts in BF16 (OpenVINO) against {FP32_NAME} on {gate.images} images "
                        "(recorded in the file; failed: the float parts run in FP32)", passed=gate.passed),)


def _verdicts(report: Int8Report, target: str) -> tuple[GateVerdict, ...]:
    a = report.accuracy
    if a is None:
        return ()
    passed = a.encodings[target].passed
    return (GateVerdict(check=f"INT8 gate against {FP32_NAME} on {a.images} images", passed=passed,
                        forced=not passed),)

"""``fp16``: model.fp16.onnx traced from PyTorch (precision.py), gated against the staged FP32 file."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import fp16_gate
from .fp32_step import FP32_NAME, parity_images
from .precision import FP16_SUFFIX, export_fp16
from .report import GateVerdict
from .request import ExportRequest
from .step import Made, MadeFile, StepOutcome, refused_in_stage

FP16_NAME = "model" + FP16_SUFFIX


def gate_images(request: ExportRequest, made: Made, spec) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(images, labels, what they are) for the FP16 gate: validation data as the INT8 and BF16
    gates use it (``fp16_images`` held-out training normals of ``calib`` or the checkpoint's
    training data, each also with a synthetic defect; never the test split), or, without a
    dataset on this machine, the parity images without labels."""
    from ffcalib.images import CalibError, gate_set
    from fftrain.data import DataError

    data = request.calib or made.payload.get("train_info", {}).get("data")
    if data:
        try:
            _, images, labels, what = gate_set(str(data), spec, val_count=request.fp16_images, progress=False)
            return np.asarray(images), np.asarray(labels), what
        except (CalibError, DataError, OSError) as e:
            print(f"ffexport: the FP16 check has no labelled validation data ({e}); it compares the parity images "
                  "(score ranking and maps, no AUROC)", file=sys.stderr)
    return parity_images(request, made.payload, (spec.height, spec.width)), None, "the parity images"


def fp16_step(request: ExportRequest, made: Made) -> StepOutcome:
    t0 = time.perf_counter()
    fp32 = made.file(FP32_NAME)
    images, labels, what = gate_images(request, made, fp32.meta.input)
    path, meta = export_fp16(made.model, made.payload, fp32.meta.source_checkpoint_sha256,
                             made.stage.path(FP16_NAME), request.batch_max, request.opset)
    with tempfile.TemporaryDirectory() as tmp:
        report = fp16_gate.compare(made.path(FP32_NAME), path, images, labels, Path(tmp), data=what)
    print(report)
    if not report.ok:
        return refused_in_stage("the FP16 graph disagrees with FP32 beyond tolerance")
    print(f"FP16 graph traced and checked in {time.perf_counter() - t0:.1f} s")
    verdict = GateVerdict(check=f"FP16 gate against {FP32_NAME} on {report.images} images", passed=True)
    return StepOutcome(files=(MadeFile(FP16_NAME, "fp16", meta, (verdict,)),), engine_source=FP16_NAME)

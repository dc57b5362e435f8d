"""The base file every export makes: model.onnx, checked against PyTorch on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fftrain.data import DataError, Sample, load_batch, resolve

from . import parity
from .exporter import export_onnx
from .report import GateVerdict
from .request import ExportRequest
from .step import Made, MadeFile, StepOutcome, refused_in_stage

FP32_NAME = "model.onnx"


def parity_images(request: ExportRequest, payload: dict, size: tuple[int, int]) -> np.ndarray:
    """``request.parity_count`` real images at the model size: from ``request.parity_images``
    (a folder of images, or a dataset whose validation and training images are used), or the
    validation images the checkpoint records."""
    if request.parity_images:
        folder = Path(request.parity_images)
        if folder.is_dir() and not (folder / "train").is_dir():
            from ffcore.files import IMAGE_SUFFIXES

            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            split = resolve(request.parity_images)
            paths = [s.path for s in split.val + split.train]
    else:
        paths = [Path(p) for p in payload.get("train_info", {}).get("parity_images", [])]
        if not paths or not all(p.is_file() for p in paths):
            raise DataError(
                "the validation images recorded in the checkpoint are not on this machine; "
                "pass --parity-images DIR (a folder of real images from the same camera)"
            )
    if not paths:
        raise DataError(f"--parity-images {request.parity_images}: no images found")
    return load_batch([Sample(p, 0) for p in paths[: request.parity_count]], size)


def fp32_step(request: ExportRequest, made: Made) -> StepOutcome:
    """Trace the FP32 graph into the stage and check it against PyTorch on the parity images."""
    from fftrain import checkpoint

    path, meta = export_onnx(made.model, made.payload, checkpoint.sha256(request.ckpt), made.stage.path(FP32_NAME),
                             request.batch_max, request.opset)
    # Looked up at call time: the tolerance and the check are the parity module's.
    report = parity.check(made.model, path, made.parity_images, tolerance_rel=parity.FP32_RTOL)
    print(report)
    if not report.ok:
        return refused_in_stage(report.reason())
    verdict = GateVerdict(check=f"parity with PyTorch on {report.images} images", passed=True)
    return StepOutcome(files=(MadeFile(FP32_NAME, "fp32", meta, (verdict,)),), engine_source=FP32_NAME)

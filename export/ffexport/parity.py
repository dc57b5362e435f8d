"""Exported-vs-eager parity, checked on every export.

Mismatches between the exported graph and the PyTorch model are the most common
complaint in the peer projects' trackers, so the exporter runs both on real images and
refuses to hand over a file that disagrees. Errors are stated relative to the largest
reference value, so one tolerance serves maps whose units differ between models.

FP32 tolerance: 1e-3 relative: well above what float32 re-association across the graph
gives for the shipped backbones (benchmarks/README.md, "Figures behind the code's
defaults"), and far below a real divergence such as a wrong resize, colour order or
normalization, which gives errors of several percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ffcore.ort import make_session
from fftrain.data import to_tensor_batch
from fftrain.model import AnomalyModel

FP32_RTOL = 1e-3


@dataclass(frozen=True)
class ParityReport:
    images: int
    map_max_abs: float
    map_max_rel: float
    score_max_abs: float
    score_max_rel: float
    batch_consistency_max_abs: float  # batch of N vs N single-image runs of the ONNX graph
    map_ref_max_abs: float  # largest |value| of the reference map: the scale errors are judged on
    tolerance_rel: float
    nonfinite_onnx: int = 0  # NaN/inf values in the ONNX outputs (map and score)
    nonfinite_torch: int = 0  # ... and in PyTorch's

    @property
    def ok(self) -> bool:
        # NaN compares False with everything, so the error bounds alone would also refuse a
        # NaN graph; checking it first gives the user the real reason.
        if self.nonfinite_onnx or self.nonfinite_torch:
            return False
        worst = max(self.map_max_rel, self.score_max_rel)
        batch_rel = self.batch_consistency_max_abs / max(self.map_ref_max_abs, 1e-12)
        return worst <= self.tolerance_rel and batch_rel <= self.tolerance_rel

    def reason(self) -> str:
        """Why the check failed, in one line ('' when it passed)."""
        if self.ok:
            return ""
        if self.nonfinite_onnx or self.nonfinite_torch:
            return (
                f"the model gives non-finite values (NaN/inf) on the {self.images} parity images ({self.nonfinite_onnx} "
                f"in the exported graph, {self.nonfinite_torch} in PyTorch): the checkpoint's weights are broken; "
                "retrain with fftrain"
            )
        return "the exported graph disagrees with PyTorch beyond tolerance"

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (
            f"parity ONNX Runtime CPU vs PyTorch on {self.images} images: "
            f"map max abs {self.map_max_abs:.3g} (rel {self.map_max_rel:.3g}), "
            f"score max abs {self.score_max_abs:.3g} (rel {self.score_max_rel:.3g}), "
            f"batch-vs-single max abs {self.batch_consistency_max_abs:.3g}; "
            + (f"non-finite values ONNX {self.nonfinite_onnx}, PyTorch {self.nonfinite_torch}; "
               if self.nonfinite_onnx or self.nonfinite_torch else "")
            + f"tolerance rel {self.tolerance_rel:g}: {verdict}"
        )


def _rel(err: float, ref: np.ndarray) -> float:
    return err / max(float(np.abs(ref).max()), 1e-12)


def check(model: AnomalyModel, onnx_path: str | Path, images: np.ndarray, tolerance_rel: float = FP32_RTOL) -> ParityReport:
    """``images``: uint8 [N, S, S, 3] RGB at the model size (at least one)."""
    if len(images) == 0:
        raise ValueError("the parity check needs at least one image")

    session = make_session(onnx_path)
    onnx_map, onnx_score = session.run(None, {session.get_inputs()[0].name: images})
    singles = [session.run(None, {session.get_inputs()[0].name: images[i : i + 1]}) for i in range(len(images))]
    single_map = np.concatenate([s[0] for s in singles])
    with torch.no_grad():
        ref_map, ref_score = (t.numpy() for t in model.eval()(to_tensor_batch(images)))
    map_err = float(np.abs(onnx_map - ref_map).max())
    score_err = float(np.abs(onnx_score - ref_score).max())
    return ParityReport(
        images=len(images),
        map_max_abs=map_err,
        map_max_rel=_rel(map_err, ref_map),
        score_max_abs=score_err,
        score_max_rel=_rel(score_err, ref_score),
        batch_consistency_max_abs=float(np.abs(single_map - onnx_map).max()),
        map_ref_max_abs=float(np.abs(ref_map).max()),
        tolerance_rel=tolerance_rel,
        nonfinite_onnx=_nonfinite(onnx_map, onnx_score),
        nonfinite_torch=_nonfinite(ref_map, ref_score),
    )


def _nonfinite(*arrays: np.ndarray) -> int:
    return int(sum((~np.isfinite(a)).sum() for a in arrays))

"""The BF16 gate: a file run in BF16 on OpenVINO's CPU plugin against FP32, on real images,
recorded in the file's metadata (``ModelMeta.precision_gates``) whether it passes or not.
``Detector(..., precision="auto")`` runs BF16 only where a passed gate for the very
configuration it would run (which part stays FP32: ``keep_fp32``) is recorded.

Two references, two sets of bounds:

* the file's own FP32 run (``ffcalib bf16 --model M``): the precision change alone, held to the
  FP16 gate's bounds (score Spearman, image AUROC difference, map error relative to the FP32
  map's peak, and at most 1% of the images changing their pass/fail verdict at the file's image
  threshold), since BF16 is the same kind of change with fewer mantissa bits. The verdict bound
  is there because the map bound is relative to the peak, which synthetic defects make high on
  validation data (ffexport/fp16_gate.py measures it);
* the FP32 source model, for a file whose flow head was re-fit on the BF16 backbone's features
  (``ffexport --bf16``): a re-fit head is another head, so its maps are not the FP32 head's plus
  rounding; held to the INT8 re-fit gate's bounds (image AUROC drop, Spearman >= 0.90), with
  the map error recorded, not bounded.

Scores on the validation set ffcalib's INT8 gate uses (never the test split): FP32 on ONNX
Runtime CPU, BF16 on the OpenVINO backend as the Detector runs it.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
from ffcore.metrics import roc_auc
from ffcore.rankcorr import spearman
from ffrt.backends import create_backend
from ffrt.backends.cpuchoice import cpu_signature
from ffrt.errors import FFRTError
from ffrt.meta import PrecisionGate
from ffrt.metafile import read_onnx_meta, write_onnx_meta

from .gate import DEFAULT_MAX_AUROC_DROP, DEFAULT_MIN_SPEARMAN_REFIT
from .images import CalibError

#: Bounds of a reduced float precision against the same file in FP32 (the FP16 gate's,
#: ffexport.fp16_gate imports them from here).
REDUCED_MIN_SPEARMAN = 0.99
REDUCED_MAX_AUROC_DIFF = 0.01
REDUCED_MAX_MAP_REL = 0.02
#: Largest share of the gate images whose verdict (score > the file's image threshold) may change.
REDUCED_MAX_VERDICT_CHANGE = 0.01


def run_all(backend, images: np.ndarray, chunk: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(maps, scores as float64) of uint8 NHWC ``images`` through an ffrt backend."""
    maps, scores = zip(*(backend.run(np.ascontiguousarray(images[i:i + chunk])) for i in range(0, len(images), chunk)))
    return np.concatenate(maps), np.concatenate(scores).astype(np.float64)


def bf16_gate(model: str | Path, images: np.ndarray, labels: np.ndarray, data: str, *, keep_fp32: str = "head",
              reference: str | Path | None = None, threads: int | None = None) -> PrecisionGate:
    """Run ``model`` in BF16 (``keep_fp32`` kept FP32) and the FP32 ``reference`` (default:
    ``model`` itself) on ``images``; the gate record, passed or not."""
    labels = np.asarray(labels).astype(np.int64)
    if len(images) < 3 or len(labels) != len(images):
        raise CalibError(f"the BF16 gate needs at least 3 labelled images, got {len(images)} images, {len(labels)} labels")
    refit = reference is not None
    reference = Path(reference or model)
    try:
        fp32, _ = create_backend("onnxruntime-cpu", reference, read_onnx_meta(reference), threads, precision="fp32")
        bf16, _ = create_backend("openvino", Path(model), read_onnx_meta(model), threads, precision="bf16",
                                 options={"keep_fp32": keep_fp32})
    except FFRTError as e:
        raise CalibError(f"cannot run the BF16 gate here: {e}") from e
    m32, s32 = run_all(fp32, images)
    m16, s16 = run_all(bf16, images)
    both = 0 < labels.sum() < len(labels)
    nonfinite = int((~np.isfinite(m16)).sum() + (~np.isfinite(s16)).sum())
    a32 = roc_auc(labels, s32) if both else None
    a16 = roc_auc(labels, np.nan_to_num(s16, nan=np.inf)) if both else None
    rho = spearman(s32, np.nan_to_num(s16, nan=np.inf))
    err = np.abs(m16 - m32)
    map_rel = float(err[np.isfinite(err)].max(initial=0.0)) / max(float(np.abs(m32).max()), 1e-12)
    flips = None
    if refit:
        bounds = {"max_auroc_drop": DEFAULT_MAX_AUROC_DROP, "min_spearman": DEFAULT_MIN_SPEARMAN_REFIT}
        passed = rho >= bounds["min_spearman"] and (a32 is None or a32 - a16 <= bounds["max_auroc_drop"])
        against = f"{reference.name} (the FP32 model this file's head was re-fit from) on onnxruntime-cpu"
    else:
        bounds = {"min_spearman": REDUCED_MIN_SPEARMAN, "max_auroc_diff": REDUCED_MAX_AUROC_DIFF,
                  "max_map_rel": REDUCED_MAX_MAP_REL, "max_verdict_change": REDUCED_MAX_VERDICT_CHANGE}
        flips = verdict_changes(s32, s16, read_onnx_meta(model).thresholds.image)
        passed = (rho >= bounds["min_spearman"] and map_rel <= bounds["max_map_rel"]
                  and (a32 is None or abs(a16 - a32) <= bounds["max_auroc_diff"])
                  and flips <= bounds["max_verdict_change"] * len(images))
    import openvino

    return PrecisionGate(
        precision="bf16", keep_fp32=keep_fp32, passed=bool(passed and nonfinite == 0), images=len(images),
        defective=int(labels.sum()), data=data, spearman=float(np.nan_to_num(rho, nan=-1.0)),
        auroc_fp32=a32, auroc=a16, map_max_rel=map_rel, nonfinite=nonfinite, verdicts_changed=flips, bounds=bounds,
        reference=against if refit else "this file in FP32 on onnxruntime-cpu",
        runtime=f"openvino {openvino.get_version().split('-')[0]} on {cpu_signature()}",
        checked_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def verdict_changes(reference_scores: np.ndarray, scores: np.ndarray, threshold: float) -> int:
    """Images judged differently at ``threshold`` (score > threshold rejects; a NaN score
    rejects, as the Detector decides)."""
    return int(((reference_scores > threshold) != ~(scores <= threshold)).sum())


def record_gate(model: str | Path, gate: PrecisionGate) -> None:
    """Write ``gate`` into the file's metadata (atomically), replacing an earlier gate of the
    same precision and configuration."""
    meta = read_onnx_meta(model)
    kept = tuple(g for g in meta.precision_gates if (g.precision, g.keep_fp32) != (gate.precision, gate.keep_fp32))
    write_onnx_meta(model, meta.model_copy(update={"precision_gates": kept + (gate,)}))

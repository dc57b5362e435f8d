"""The INT8 accuracy gate: FP32 and each INT8 file scored on ORT CPU, AUROC drop and the
Spearman rank correlation (ffcore.metrics, the rule the FP16 gate uses too); and the
FP32-vs-INT8 latency table."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from ffcore.metrics import roc_auc
from ffcore.rankcorr import spearman
from ffcore.ort import make_session
from ffcore.progress import progress as progress_bar
from ffcore.timing import interleaved
from ffrt.metafile import meta_from_proto

from .images import CalibError
from .report import Accuracy, EncodingAccuracy, Latency

DEFAULT_MAX_AUROC_DROP = 0.01
#: Lowest accepted Spearman rank correlation of INT8 vs FP32 image scores on the
#: validation set. 0.95 means the INT8 model orders parts essentially like FP32: it admits
#: roughly the backbone feature noise that still costs about 0.01-0.02 AUROC (the noise ->
#: Spearman -> AUROC figures: benchmarks/README.md, "Figures behind the code's defaults").
DEFAULT_MIN_SPEARMAN = 0.95
#: The same bound when each INT8 file's flow head was re-fit (ffexport --int8). A re-fit head
#: is a re-trained head: its scores are not the FP32 head's plus noise, and the noise ->
#: AUROC link above no longer holds (the head adapts; image AUROC is gated directly): even
#: continuing the FP32 head's training on FP32 features moves its ranking. 0.90 still
#: refuses a head that orders parts differently (a broken re-fit, or plain PTQ, scores near
#: 0). The demo's figures are in benchmarks/README.md ("Figures behind the code's defaults").
DEFAULT_MIN_SPEARMAN_REFIT = 0.90


def score_images(session, images: np.ndarray, batch: int = 8, progress: bool = False, desc: str = "scoring") -> np.ndarray:
    """Image scores (float64 [N]) of uint8 NHWC ``images``."""
    name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]
    score_name = "score" if "score" in out_names else out_names[-1]
    scores = []
    for i in progress_bar(range(0, len(images), batch), desc=desc, unit="batch", enabled=progress):
        (s,) = session.run([score_name], {name: images[i : i + batch]})
        scores.append(np.asarray(s, dtype=np.float64).reshape(-1))
    return np.concatenate(scores) if scores else np.zeros(0)


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
    sessions = {k: make_session(v, threads) for k, v in models.items()}
    ref = next(iter(models))
    rng = np.random.default_rng(0)
    out = []
    for b in batches:
        x = rng.integers(0, 256, size=(b, input_hw[0], input_hw[1], 3), dtype=np.uint8)
        runners = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: x})) for k, s in sessions.items()}
        bar = progress_bar(desc=f"benchmark batch {b}", unit="round", enabled=progress)
        times = interleaved(runners, min_rounds=min_runs, min_seconds=min_seconds * len(sessions),
                            on_round=lambda _: bar.update(1))
        bar.close()
        ms = {k: float(np.median(v)) for k, v in times.items()}
        out.append(
            Latency(
                batch=b,
                ms_per_batch=ms,
                images_per_s={k: b * 1000.0 / v for k, v in ms.items()},
                speedup_vs_fp32={k: ms[ref] / v for k, v in ms.items() if k != ref},
            )
        )
    return out

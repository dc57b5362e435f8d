"""ffeval's measurement: accuracy of an exported model, run through ``ffrt.Detector``.

The artifact a line runs is what is evaluated (the .onnx through ffrt's preprocessing,
backend and thresholds), not the PyTorch model it came from. Metrics are those of
``ffcore.metrics`` (numpy only), so ffeval and training-time figures are comparable.

Image level, on the test split of the data: AUROC, F1 / precision / recall and confusion
matrix at the model's stored image threshold (``score > threshold`` = reject), F1-max
(an oracle: its threshold is chosen on the test set itself), and per defect type (AUROC
of that type against all test normals, recall at the stored threshold).
Pixel level (only where ground-truth masks exist): pixel AUROC and AUPRO (FPR <= 0.3) over
every test image at the model's input size (normal images count with empty masks; defect
images without a mask file are left out of the pixel metrics and counted).
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .synthetic_data import MARKER

SCHEMA = "ffeval.eval"
SCHEMA_VERSION = 1
AUPRO_FPR_LIMIT = 0.3


class EvalError(RuntimeError):
    """Evaluation cannot run; the message is one line saying why."""


def _split(data: str):
    from ffcore.data import DataError, resolve

    try:
        split = resolve(data)
    except DataError as e:
        raise EvalError(str(e)) from e
    if not split.test:
        raise EvalError(f"{data}: no test images (expected test/good and test/<defect> folders)")
    return split


def model_geometry_mask(path, size: tuple[int, int], mode: str) -> np.ndarray:
    """A ground-truth mask brought into the model input's geometry (where the maps are),
    resized the way the frame was: stretched, or letterboxed into the middle."""
    from ffcore.images import read_mask, resize_to_model

    from ffcore.images import DataError

    try:
        if mode == "stretch":
            return read_mask(path, size)
        native = read_mask(path, None)
    except DataError as e:
        raise EvalError(str(e)) from e
    return resize_to_model(native.astype(np.uint8) * 255, size, mode) > 127


def evaluate(
    model_path: str | Path, data: str, out: str | Path | None = None, backend: str = "auto",
    batch_size: int = 8, per_group: int = 4, synthetic: bool | None = None, progress=lambda s: None,
    command: list[str] | None = None, html: str | Path | None = None, pictures: int | None = None,
) -> dict:
    from ffrt import Detector, FFRTError
    from ffcore import metrics as M

    path = Path(model_path)
    if not path.is_file():
        raise EvalError(f"{path}: no such model file")
    if html is not None:
        from ffrt.review import check_page_path

        try:
            check_page_path(html)
        except (ValueError, OSError) as e:
            raise EvalError(str(e)) from e
    split = _split(data)
    if synthetic is None:
        synthetic = not data.startswith("elpv:") and (Path(data) / MARKER).is_file()
    tag = "SYNTHETIC defects" if synthetic else None
    try:
        det = Detector(path, backend=backend, resize_outputs=False)
    except FFRTError as e:
        raise EvalError(str(e).splitlines()[0]) from e
    h, w = det.input_size
    samples = split.test
    labels = np.array([s.label for s in samples], dtype=np.int64)
    if labels.min() == labels.max():
        raise EvalError(f"{data}: the test split has only {'defective' if labels[0] else 'normal'} images; "
                        "AUROC needs both normal and defective test images")
    has_masks = any(s.mask_path is not None for s in samples if s.label == 1)
    pixel_idx = [i for i, s in enumerate(samples) if s.label == 0 or s.mask_path is not None] if has_masks else []
    pixel_pos = {i: k for k, i in enumerate(pixel_idx)}
    maps = np.empty((len(pixel_idx), h, w), np.float32) if has_masks else None
    scores = np.empty(len(samples), np.float64)

    progress(f"{len(samples)} test images through {det.backend_description}")
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            results = det.predict_batch([str(s.path) for s in chunk], batch_size=min(batch_size, len(chunk)))
            for j, r in enumerate(results):
                i = start + j
                scores[i] = r.score
                if i in pixel_pos:
                    maps[pixel_pos[i]] = r.anomaly_map
            if start // batch_size % 10 == 0:
                progress(f"  {min(start + batch_size, len(samples))}/{len(samples)}")
    except FFRTError as e:
        raise EvalError(str(e).splitlines()[0]) from e

    thr = det.thresholds
    pred = ~(scores <= thr.image)
    y = labels == 1
    fpr, tpr, _ = M.roc_curve(labels, scores)
    precision, recall = M.precision_recall_at_threshold(labels, scores, thr.image)
    f1max, f1max_t = M.f1_max(labels, scores)
    image = {
        "auroc": M.roc_auc(labels, scores),
        "threshold": thr.image,
        "threshold_source": thr.source,
        "f1_at_threshold": M.f1_at_threshold(labels, scores, thr.image),
        "precision_at_threshold": precision,
        "recall_at_threshold": recall,
        "confusion_at_threshold": {
            "true_reject": int((pred & y).sum()), "false_reject": int((pred & ~y).sum()),
            "false_accept": int((~pred & y).sum()), "true_accept": int((~pred & ~y).sum()),
        },
        "f1_max_oracle": f1max, "f1_max_threshold_oracle": f1max_t,
    }
    types = sorted({s.defect_type for s in samples if s.label == 1})
    per_type = {}
    curves = {}
    for t in types:
        idx = np.array([i for i, s in enumerate(samples) if s.label == 0 or s.defect_type == t])
        pos = np.array([samples[i].defect_type == t for i in idx])
        sub_labels, sub_scores = pos.astype(np.int64), scores[idx]
        per_type[t] = {
            "count": int(pos.sum()),
            "auroc_vs_all_normals": M.roc_auc(sub_labels, sub_scores),
            "recall_at_threshold": float((sub_scores[pos] > thr.image).mean()),
            "mean_score": float(sub_scores[pos].mean()),
        }
        f, tp, _ = M.roc_curve(sub_labels, sub_scores)
        curves[t] = (f, tp, per_type[t]["auroc_vs_all_normals"])

    pixel: dict = {"available": False, "reason": "the data has image labels only (no ground-truth masks)"}
    masks = None
    if has_masks:
        mode = det.meta.input.resize_mode
        masks = np.stack([model_geometry_mask(samples[i].mask_path, (h, w), mode) if samples[i].label == 1
                          else np.zeros((h, w), bool) for i in pixel_idx])
        pixel = {
            "available": True,
            "auroc": M.pixel_auroc(masks, maps),
            "aupro": M.aupro(masks, maps, AUPRO_FPR_LIMIT),
            "aupro_fpr_limit": AUPRO_FPR_LIMIT,
            "images": len(pixel_idx),
            "defect_images_without_mask": int(sum(1 for s in samples if s.label == 1 and s.mask_path is None)),
            "resolution": f"{h}x{w} (model input size; masks resized nearest-neighbour)",
            "pixel_threshold": thr.pixel,
        }
    counts = split.counts()
    report = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else list(sys.argv),
        "model": {"path": str(path), "backbone": det.meta.backbone.name, "precision": det.meta.precision,
                  "input": f"{h}x{w}", "backend": det.backend_description},
        "data": {"spec": data, "synthetic": bool(synthetic), "counts": counts,
                 "defect_types": {t: per_type[t]["count"] for t in types}, "notes": list(split.notes)
                 + (["SYNTHETIC defects drawn on real normal images (ffcore.synthetic): figures measure "
                     "sensitivity to drawn defects, not accuracy on real ones."] if synthetic else [])},
        "image": image, "per_defect_type": per_type, "pixel": pixel,
        "examples": {g: [{"path": str(samples[i].path), "defect_type": samples[i].defect_type, "score": float(scores[i])}
                         for i in idx] for g, idx in pick_examples(labels, scores, per_group).items()},
        "files": {},
    }

    pro = None
    if pixel["available"]:
        pf, pp = M.pro_curve(masks, maps, AUPRO_FPR_LIMIT)
        from ffrt.review import ProCurve

        pro = ProCurve(pf, pp, pixel["aupro"], AUPRO_FPR_LIMIT)
    if out is not None:
        from .plots import pro_plot, roc_plot

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        name = f"{path.name} on {data}" + (f" ({tag})" if tag else "")
        report["files"]["roc"] = str(roc_plot(fpr, tpr, image["auroc"], f"image ROC: {name}", out / "roc.png",
                                              per_type=curves if len(types) > 1 else None,
                                              operating_point=(float(pred[~y].mean()), float(pred[y].mean()), thr.image)))
        if pro is not None:
            report["files"]["pro"] = str(pro_plot(pro.fpr, pro.pro, pixel["aupro"], AUPRO_FPR_LIMIT, f"PRO curve: {name}", out / "pro.png"))
        progress("rendering the overlay grid")
        report["files"]["overlays"] = str(_overlays(det, samples, scores, per_group, f"{name}: thresholds image "
                                                     f"{thr.image:.4g}, pixel {thr.pixel:.4g}", out / "overlays.png"))
        report["files"]["metrics"] = str(out / "metrics.json")
    if html is not None:
        from ffrt.review import DEFAULT_PICTURES

        from .review import write_eval_page

        mode = det.meta.input.resize_mode

        def ground_truth(i):
            s = samples[i]
            return model_geometry_mask(s.mask_path, (h, w), mode) if s.mask_path is not None else None

        report["files"]["review"] = str(write_eval_page(
            html, det, samples, scores, report, pro, ground_truth,
            DEFAULT_PICTURES if pictures is None else pictures, progress))
    if out is not None:
        from ffcore.files import atomic_write_bytes
        import json

        atomic_write_bytes(out / "metrics.json", json.dumps(report, indent=2).encode())
    return report


def pick_examples(labels: np.ndarray, scores: np.ndarray, per_group: int) -> dict[str, list[int]]:
    order = np.argsort(scores, kind="stable")
    defects = [int(i) for i in order if labels[i] == 1]
    normals = [int(i) for i in order if labels[i] == 0]
    return {
        "highest-scoring defects": defects[::-1][:per_group],
        "lowest-scoring defects": defects[:per_group],
        "highest-scoring normals": normals[::-1][:per_group],
    }


def _overlays(det, samples, scores, per_group: int, title: str, path: Path) -> Path:
    from ffrt.overlay import render_overlay
    from ffrt.preprocess import read_image_file
    from ffcore.images import resize_to_model

    from .plots import overlay_grid

    labels = np.array([s.label for s in samples])
    groups = pick_examples(labels, scores, per_group)
    chosen = [(g, i) for g, idx in groups.items() for i in idx]
    h, w = det.input_size
    mode = det.meta.input.resize_mode
    # Each row shows the frame as the model saw it (stretched or letterboxed to (h, w)),
    # so the map, the predicted mask and the ground truth line up with it.
    images = [resize_to_model(read_image_file(samples[i].path), (h, w), mode) for _, i in chosen]
    results = det.predict_batch(images, batch_size=1) if images else []
    thr = det.thresholds
    # One colour scale for every row, so rows compare: from the pixel threshold's half to
    # the hottest pixel shown.
    hi = max([float(np.nanmax(r.anomaly_map)) for r in results] + [thr.pixel * 1.5])
    lo = min([float(np.nanpercentile(r.anomaly_map, 1)) for r in results] + [thr.pixel * 0.5])
    rows = []
    for (group, i), img, r in zip(chosen, images, results):
        s = samples[i]
        empty = np.zeros_like(r.mask)
        gt = None
        if s.mask_path is not None:
            gt = model_geometry_mask(s.mask_path, (h, w), mode).astype(np.float32)
        elif s.label == 0:
            gt = np.zeros((h, w), np.float32)
        rows.append({
            "image": img,
            "heat": render_overlay(img, r.anomaly_map, empty, vmin=lo, vmax=hi),
            "pred": render_overlay(img, r.anomaly_map, r.mask, vmin=lo, vmax=hi, score=r.score, is_anomalous=r.is_anomalous),
            "gt": gt,
            "label": f"{group}\n{s.defect_type} {Path(s.path).name}\nscore {scores[i]:.4g}",
        })
    return overlay_grid(rows, title, path)

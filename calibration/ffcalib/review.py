"""``ffcalib thresholds --html``: the review page of the images thresholds were calibrated on
(normals only, or normals and defects), with the new thresholds marked as the stored ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffcore.files import sha256_file
from ffrt.review import DEFAULT_PICTURES, ReviewContext, ReviewPart, choose_pictured, render_pictures, write_review_page


def write_calibration_page(path, det, model_path: Path, normal_paths, normal_scores, defect_paths, defect_scores,
                           masks: list[np.ndarray] | None, image_t: float, pixel_t: float, backend: str,
                           data: str, written: bool, previous: tuple[float, float],
                           pictures: int = DEFAULT_PICTURES) -> Path:
    paths = [str(p) for p in list(normal_paths) + list(defect_paths)]
    scores = np.r_[normal_scores, defect_scores].astype(np.float64)
    labels = [0] * len(normal_paths) + [1] * len(defect_paths)
    parts = [ReviewPart(p, float(s), y) for p, s, y in zip(paths, scores, labels)]
    chosen = choose_pictured(scores, image_t, pictures)
    pics = render_pictures(det, paths, chosen, scores, ground_truth=lambda i: masks[i] if masks else None,
                           pixel_threshold=pixel_t)
    context = ReviewContext(
        model=str(model_path), model_sha256=sha256_file(model_path), backend=backend, precision=det.precision,
        data=data, made_by="ffcalib thresholds",
        notes=(() if len(defect_paths) else ("Normal images only: the false-reject rate is measured, recall is not "
                                             "(no defect images were given).",))
        + (() if written else (f"Dry run: the thresholds marked as stored ({image_t:.6g}, {pixel_t:.6g}) were NOT "
                               f"written; the file still holds {previous[0]:.6g}, {previous[1]:.6g}.",)))
    return write_review_page(path, parts, image_t, pixel_t, context, pictures=pics,
                             title=f"Threshold review (ffcalib): {model_path.name}")

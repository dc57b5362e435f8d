"""``ffeval --html``: the threshold review page of an evaluation (the test split, labelled per
defect type, with ROC, and PRO where masks exist), next to metrics.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffcore.files import sha256_file
from ffrt.review import ProCurve, ReviewContext, ReviewPart, choose_pictured, render_pictures, write_review_page

from .machine import describe, one_line


def write_eval_page(path, det, samples, scores: np.ndarray, report: dict, pro: ProCurve | None,
                    ground_truth, pictures: int, progress=lambda s: None) -> Path:
    """``ground_truth(i)``: the mask of ``samples[i]`` at the model input size, or None."""
    parts = [ReviewPart(str(s.path), float(sc), int(s.label), s.defect_type if s.label == 1 else "")
             for s, sc in zip(samples, scores)]
    thr = det.thresholds
    chosen = choose_pictured(scores, thr.image, pictures)
    progress(f"rendering {len(chosen)} pictures for the review page")
    pics = render_pictures(det, [str(s.path) for s in samples], chosen, scores, ground_truth=ground_truth,
                           progress=progress)
    model = report["model"]
    context = ReviewContext(
        model=model["path"], model_sha256=sha256_file(model["path"]), backend=model["backend"],
        precision=model["precision"], data=report["data"]["spec"], machine=one_line(describe()),
        made_by=" ".join(report["command"]), notes=tuple(report["data"]["notes"]))
    return write_review_page(path, parts, thr.image, thr.pixel, context, pictures=pics, pro=pro)

"""``ffrt detect --html``: the review page of a detect run's records (the ``images`` of its
--json report): unlabelled parts, so the page shows how many are rejected at each threshold
and which parts flip, not rates."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffcore.files import sha256_file

from ..errors import InvalidArgumentError
from .page import ReviewContext, ReviewPart, write_review_page
from .pictures import DEFAULT_PICTURES, choose_pictured, render_pictures


def write_records_page(path, detector, records: list[dict], data: str, pictures: int = DEFAULT_PICTURES) -> Path:
    """Records with a finite score become parts; error records and NaN scores are left out
    (the page says how many)."""
    scored = [r for r in records if isinstance(r.get("score"), (int, float)) and np.isfinite(r["score"])]
    if not scored:
        raise InvalidArgumentError("no image was scored, so there is no review page to write")
    left_out = len(records) - len(scored)
    parts = [ReviewPart(str(r["path"]), float(r["score"])) for r in scored]
    scores = np.array([p.score for p in parts])
    thr = detector.thresholds
    chosen = choose_pictured(scores, thr.image, pictures)
    pics = render_pictures(detector, [p.path for p in parts], chosen, scores)
    model = str(detector.model_path)
    context = ReviewContext(
        model=model, model_sha256=sha256_file(model), backend=detector.backend_description,
        precision=detector.precision, data=data, made_by="ffrt detect",
        notes=("Unlabelled images: the page counts rejects at each threshold; false-reject rate and recall need "
               "labelled images (ffeval --html, or ffcalib thresholds --html with --normal and --defects).",)
        + ((f"{left_out} image(s) without a score (unreadable or NaN) are not on this page.",) if left_out else ()))
    return write_review_page(path, parts, thr.image, thr.pixel, context, pictures=pics)

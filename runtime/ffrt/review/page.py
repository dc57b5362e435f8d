"""One self-contained HTML file to choose an image threshold on: the scores, a slider that
recomputes the confusion counts, false-reject rate (Wilson interval), recall per defect
type, precision and F1 at once, the parts that flip as pictures, the pixel threshold on a
few maps, ROC/PRO curves, and the exact ``ffcalib thresholds`` command that applies it.

Everything (CSS, JS, pictures as data: URIs, the scores as JSON) is inside the file, and
its Content-Security-Policy forbids any fetch, so it opens from a file URL on a PC without
network. The JS (page.js, written for this page, no library) computes every figure from
the embedded scores with the runtime's rule ``score > threshold`` -> rejected.
"""

from __future__ import annotations

import html
import json
import platform
import shlex
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from string import Template

import numpy as np

from ffcore.files import atomic_write_bytes
from ffcore.metrics import roc_auc, roc_curve

from ..errors import InvalidArgumentError
from .pictures import Pictures

CURVE_POINTS = 600  # enough for a smooth curve on screen; keeps 2,000-image pages small


@dataclass(frozen=True)
class ReviewPart:
    path: str
    score: float
    label: int | None = None  # 1 defect, 0 normal, None unlabelled
    defect_type: str = ""


@dataclass(frozen=True)
class ReviewContext:
    """What the scores were computed with and on, shown at the top of the page."""

    model: str
    model_sha256: str
    backend: str
    precision: str
    data: str
    machine: str = field(default_factory=lambda: this_machine())
    made_by: str = ""  # the command that wrote the page
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProCurve:
    fpr: np.ndarray
    pro: np.ndarray
    aupro: float
    fpr_limit: float


def this_machine() -> str:
    return f"{platform.node()} ({platform.system()} {platform.machine()}, {platform.processor() or 'CPU model unknown'})"


def _short_name(path: str) -> str:
    """folder/file: file names repeat across defect-type folders (crack/001.png, scratch/001.png)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """At most CURVE_POINTS points of a curve, first and last kept (for drawing only)."""
    if len(x) > CURVE_POINTS:
        keep = np.unique(np.r_[np.linspace(0, len(x) - 1, CURVE_POINTS).round().astype(int), len(x) - 1])
        x, y = x[keep], y[keep]
    return [round(float(v), 6) for v in x], [round(float(v), 6) for v in y]


def _roc(parts: list[ReviewPart], types: list[str]) -> tuple[dict | None, dict[str, float]]:
    labelled = [p for p in parts if p.label is not None]
    labels = np.array([p.label for p in labelled], np.int64)
    if labels.size == 0 or labels.min() == labels.max():
        return None, {}
    scores = np.array([p.score for p in labelled])
    fpr, tpr, _ = roc_curve(labels, scores)
    x, y = _thin(fpr, tpr)
    out = {"all": {"fpr": x, "tpr": y, "auroc": roc_auc(labels, scores)}, "per_type": {}}
    aurocs = {}
    for t in types:
        keep = np.array([p.label == 0 or p.defect_type == t for p in labelled])
        sub = (labels[keep] == 1).astype(np.int64)
        aurocs[t] = roc_auc(sub, scores[keep])
        if len(types) > 1:  # one type: its curve is the black one
            f, tp, _ = roc_curve(sub, scores[keep])
            x, y = _thin(f, tp)
            out["per_type"][t] = {"fpr": x, "tpr": y}
    return out, aurocs


def _context_html(c: ReviewContext, n_parts: int, roc: dict | None) -> str:
    rows = [("model", c.model), ("model sha256", c.model_sha256), ("backend", c.backend), ("precision", c.precision),
            ("data", f"{c.data} ({n_parts} images)"), ("machine", c.machine), ("written by", c.made_by),
            ("written at", datetime.now(timezone.utc).isoformat(timespec="seconds"))]
    if roc:
        rows.append(("image AUROC", f"{roc['all']['auroc']:.4f}"))
    return "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in rows)


def _type_table(types: list[str], counts: dict[str, int], aurocs: dict[str, float]) -> str:
    if not types:
        return ""
    rows = "".join(
        f"<tr data-type=\"{html.escape(t)}\"><td>{html.escape(t)}</td><td>{counts[t]}</td>"
        f"<td>{aurocs[t]:.4f}</td><td id=\"recall-{html.escape(t)}\"></td></tr>" if t in aurocs else ""
        for t in types)
    return ("<table id=\"per-type\"><tr><th>defect type</th><th>images</th><th>AUROC vs all normals</th>"
            f"<th>recall at slider</th></tr>{rows}</table>")


def build_review_page(
    parts: list[ReviewPart], image_threshold: float, pixel_threshold: float, context: ReviewContext,
    pictures: Pictures | None = None, pro: ProCurve | None = None, title: str | None = None,
) -> str:
    """The page's HTML text. ``pictures.by_part`` is keyed by index into ``parts``."""
    if not parts:
        raise InvalidArgumentError("a review page needs at least one scored image")
    if not all(np.isfinite(p.score) for p in parts):
        raise InvalidArgumentError("a review page needs finite scores (the model returned NaN/inf)")
    parts = [replace(p, defect_type="defect") if p.label == 1 and not p.defect_type else p for p in parts]
    types = sorted({p.defect_type for p in parts if p.label == 1})
    counts = {t: sum(1 for p in parts if p.label == 1 and p.defect_type == t) for t in types}
    roc, aurocs = _roc(parts, types)
    pictures = pictures or Pictures({}, [], (pixel_threshold * 0.5, pixel_threshold * 1.5))
    pics, index = [], {}
    for i, pic in pictures.by_part.items():
        index[i] = len(pics)
        pics.append({"image": pic.image, "overlay": pic.overlay})
    data = {
        "context": {"model": context.model, "model_sha256": context.model_sha256, "data": context.data},
        "thresholds": {"image": float(image_threshold), "pixel": float(pixel_threshold)},
        "defect_types": types,
        "parts": [{"name": _short_name(p.path), "path": str(p.path), "score": float(p.score), "label": p.label,
                   "type": p.defect_type if p.label == 1 else "", "picture": index.get(i, -1)}
                  for i, p in enumerate(parts)],
        "pictures": pics,
        "pixel_examples": [vars(e) for e in pictures.pixel_examples],
        "pixel_range": [float(v) for v in pictures.map_range],
        "roc": roc,
        "pro": None if pro is None else {**dict(zip(("fpr", "pro"), _thin(pro.fpr, pro.pro))), "aupro": pro.aupro,
                                         "fpr_limit": pro.fpr_limit},
        "apply_command": f"ffcalib thresholds --model {shlex.quote(context.model)} --image-threshold {{IMAGE}} "
                         "--pixel-threshold {PIXEL}",
    }
    n_pics, n_parts = len(pics), len(parts)
    curves = ""
    if roc:
        curves += f"<figure><canvas id=\"roc\" width=\"420\" height=\"340\"></canvas><figcaption>image ROC (black: all " \
                  f"defects, AUROC {roc['all']['auroc']:.4f}; colours: per type); red dot: the slider</figcaption></figure>"
    if pro is not None:
        curves += f"<figure><canvas id=\"pro\" width=\"420\" height=\"340\"></canvas><figcaption>PRO curve, AUPRO " \
                  f"{pro.aupro:.4f} up to FPR {pro.fpr_limit:g}</figcaption></figure>"
    pixel_section = (
        "<div class=\"controls\"><label for=\"pixel-slider\">pixel threshold</label><input type=\"range\" "
        "id=\"pixel-slider\"><input type=\"number\" id=\"pixel-number\" step=\"any\" aria-label=\"pixel threshold\">"
        f"<span>in use: <b id=\"pixel-value\"></b> (stored {pixel_threshold:.6g})</span></div>"
        "<p>Pixels above the pixel threshold in red, on the highest-scoring pictured parts (maps shown at 256 "
        "levels between the colour scale's ends).</p><div id=\"pixel-examples\"></div>"
        if pictures.pixel_examples else f"<p>stored pixel threshold <b id=\"pixel-value\">{pixel_threshold:.6g}</b> "
        "(no example maps embedded)</p>")
    page = Template(resources.files(__package__).joinpath("page.html").read_text()).substitute(
        title=html.escape(title or f"Threshold review: {Path(context.model).name} on {context.data}"),
        css=resources.files(__package__).joinpath("page.css").read_text(),
        js=resources.files(__package__).joinpath("page.js").read_text(),
        context=_context_html(context, n_parts, roc),
        notes="".join(f"<p class=\"warn\">{html.escape(n)}</p>" for n in context.notes),
        stored=f"{image_threshold:.6g}",
        type_table=_type_table(types, counts, aurocs),
        gt_note=", the ground-truth mask in green" if pictures.ground_truth else "",
        picture_note=f" Pictures are embedded for the {n_pics} of {n_parts} parts nearest the stored threshold."
        if n_pics < n_parts else "",
        pixel_section=pixel_section,
        curves=curves or "<p>no curves: the images are not labelled normal and defective</p>",
        # A "<" inside the JSON (e.g. "</script>" in a file name) could end the script element early.
        data=json.dumps(data, separators=(",", ":")).replace("<", "\\u003c"),
    )
    return page


def check_page_path(path: str | Path, what: str = "--html") -> Path:
    """Refuse a page path that is not *.html or cannot be written, before any scoring
    (InvalidArgumentError / OSError naming ``what``)."""
    from ..runreport import check_output_file

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InvalidArgumentError(f"{what} {path}: the review page is one HTML file; give a name ending in .html")
    check_output_file(path, what)
    return path


def write_review_page(path: str | Path, *args, **kwargs) -> Path:
    """``build_review_page`` written atomically to ``path`` (parent folders created)."""
    path = check_page_path(path)
    atomic_write_bytes(path, build_review_page(*args, **kwargs).encode("utf-8"))
    return path

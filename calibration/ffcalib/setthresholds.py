"""Set the thresholds stored in a model by hand (a value chosen on the review page), without
scoring any image: the file's metadata is replaced atomically, nothing else changes, and a
TensorRT engine built from it needs no rebuild (thresholds are applied after inference).

A thresholds JSON (the review page's "download thresholds.json") is::

    {"schema": "ffrt.thresholds", "schema_version": 1, "image": 1.234, "pixel": 0.56, "source": "..."}

with ``image`` and/or ``pixel`` given (a missing one keeps the stored value).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ffrt.errors import ModelFileError
from ffrt.metafile import read_onnx_meta, write_onnx_meta

from .images import CalibError

SCHEMA = "ffrt.thresholds"


def read_thresholds_json(path: str | Path) -> tuple[float | None, float | None, str]:
    """(image, pixel, source) from a thresholds JSON; one clear CalibError for anything else."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CalibError(f"--thresholds-json {path}: cannot read it ({e.strerror or e})") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise CalibError(f"--thresholds-json {path}: not JSON ({e}); use the file the review page downloads") from e
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise CalibError(f"--thresholds-json {path}: not a thresholds file (expected \"schema\": \"{SCHEMA}\"); "
                         "use the file the review page downloads")
    image, pixel = doc.get("image"), doc.get("pixel")
    if image is None and pixel is None:
        raise CalibError(f"--thresholds-json {path}: has neither \"image\" nor \"pixel\"")
    return image, pixel, str(doc.get("source") or f"thresholds file {path.name}")


def _checked(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise CalibError(f"{what} must be a finite number >= 0 (scores and maps are >= 0), not {value!r}")
    return float(value)


def set_thresholds(model_path: str | Path, image: float | None = None, pixel: float | None = None,
                   source: str = "", write: bool = True) -> tuple[tuple[float, float], tuple[float, float]]:
    """Store ``image`` and/or ``pixel`` (None keeps the stored value) in the model file
    (``write=False``: only check); returns ((old image, old pixel), (new image, new pixel)).
    Every value is checked before the file is touched."""
    image = _checked(image, "the image threshold")
    pixel = _checked(pixel, "the pixel threshold")
    if image is None and pixel is None:
        raise CalibError("give --image-threshold and/or --pixel-threshold (or --thresholds-json)")
    try:
        meta = read_onnx_meta(model_path)
    except ModelFileError as e:
        raise CalibError(str(e)) from e
    old = (meta.thresholds.image, meta.thresholds.pixel)
    new = (old[0] if image is None else image, old[1] if pixel is None else pixel)
    what = ", ".join(f"{k} {v:.6g}" for k, v in (("image", image), ("pixel", pixel)) if v is not None)
    if not write:
        return old, new
    # The stored backend stays: a value chosen by hand was chosen on scores from that backend.
    write_onnx_meta(model_path, meta.with_thresholds(new[0], new[1], f"set by hand ({what}): {source}".rstrip(": "),
                                                     calibrated_on=meta.thresholds.calibrated_on))
    return old, new

"""Image sources for ffcalib: folders, MVTec-style roots and the ELPV demo split.

Everything is decoded and resized by ``ffrt.preprocess.prepare_batch`` (the runtime's own
path: BGR decode -> RGB, INTER_AREA resize to the model size), so calibration sees the
exact bytes the graph receives in production.

Import rule (DESIGN.md: ``ffcalib -> ffrt``): ``fftrain.data`` is imported lazily and
only for the ``elpv:mono`` / ``elpv:poly`` demo specs, because that module is the single
definition of the fixed ELPV split (numpy/OpenCV only, no torch at import); duplicating it
here would let the splits drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffrt.errors import FFRTError
from ffrt.meta import InputSpec
from ffrt.preprocess import prepare_batch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class CalibError(Exception):
    """A user-facing ffcalib failure; ``str(e)`` is the one-line reason."""


@dataclass
class LabelledPaths:
    paths: list[Path]
    labels: np.ndarray  # 0 normal, 1 defective
    source: str


def list_images(folder: str | Path, what: str = "folder") -> list[Path]:
    """Image files directly inside ``folder`` (sorted), or a CalibError saying why none."""
    folder = Path(folder)
    if not folder.exists():
        raise CalibError(f"{what} {folder}: no such folder")
    if not folder.is_dir():
        raise CalibError(f"{what} {folder}: not a folder")
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as e:
        raise CalibError(f"{what} {folder}: cannot be read ({e.strerror or e})") from e
    if not paths:
        raise CalibError(
            f"{what} {folder}: contains no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point it at a folder of images"
        )
    return paths


def sample_evenly(items: list, count: int | None) -> list:
    """``count`` items spread evenly over ``items`` (deterministic); all when count is None/0/too large."""
    if not count or count >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def _elpv(spec: str):
    from fftrain.data import DataError, elpv  # lazy: see the module docstring

    try:
        return elpv(spec.split(":", 1)[1])
    except DataError as e:
        raise CalibError(str(e)) from e


def calibration_paths(spec: str | Path) -> list[Path]:
    """Normal images for calibration: a folder, an MVTec root (train/good) or elpv:mono/poly (training normals)."""
    spec_s = str(spec)
    if spec_s.startswith("elpv:"):
        return [s.path for s in _elpv(spec_s).train]
    root = Path(spec_s)
    if (root / "train" / "good").is_dir():
        return list_images(root / "train" / "good", "calibration folder")
    return list_images(root, "calibration folder")


def validation_set(spec: str | Path) -> LabelledPaths:
    """Images for the accuracy gate.

    elpv:mono/poly -> the fixed ELPV test split (normals + defects); an MVTec root with
    test/ -> its test split (test/good normal, other folders defective); a plain folder ->
    its images, all taken as normal (then only the score rank correlation can be checked).
    """
    spec_s = str(spec)
    if spec_s.startswith("elpv:"):
        test = _elpv(spec_s).test
        return LabelledPaths([s.path for s in test], np.array([s.label for s in test], dtype=np.int64), spec_s)
    root = Path(spec_s)
    test_dir = root / "test"
    if test_dir.is_dir():
        paths, labels = [], []
        for sub in sorted(d for d in test_dir.iterdir() if d.is_dir()):
            imgs = list_images(sub, "validation folder")
            paths += imgs
            labels += [0 if sub.name == "good" else 1] * len(imgs)
        if not paths:
            raise CalibError(f"validation folder {test_dir}: contains no images")
        return LabelledPaths(paths, np.array(labels, dtype=np.int64), spec_s)
    paths = list_images(root, "validation folder")
    return LabelledPaths(paths, np.zeros(len(paths), dtype=np.int64), spec_s)


def load_images(paths: list[Path], spec: InputSpec, progress: bool = True, desc: str = "loading images") -> np.ndarray:
    """uint8 [N,H,W,3] RGB at the model size, decoded/resized exactly as ffrt.Detector does."""
    from fftrain.progress import progress as progress_bar

    out = np.empty((len(paths), spec.height, spec.width, 3), dtype=np.uint8)
    for i, p in enumerate(progress_bar(paths, desc=desc, unit="img", enabled=progress)):
        try:
            out[i] = prepare_batch([p], spec).batch[0]
        except FFRTError as e:
            raise CalibError(str(e)) from e
    return out

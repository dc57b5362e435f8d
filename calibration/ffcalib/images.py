"""Image sources for ffcalib: folders, MVTec-style roots and the ELPV demo split.

Everything is decoded and resized by ``ffrt.preprocess.prepare_batch`` (the runtime's own
path: BGR decode -> RGB, INTER_AREA resize to the model size), so calibration sees the
exact bytes the graph receives in production.

The ELPV split, the MVTec layout, the every-10th hold-out rule and the synthetic defects
come from the torch-free core (``ffcore.data``, ``ffcore.synthetic``), the definitions
training uses, so the splits cannot drift apart.

The INT8 gate's default set (:func:`held_out_split` + :func:`gate_images`) is validation
data, never the test split: the training normals held out from calibration (every 10th,
the trainer's rule) plus the same normals with one synthetic defect each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffcore.data import DataError, elpv, split_train_val
from ffcore.files import IMAGE_SUFFIXES
from ffcore.progress import progress as progress_bar
from ffcore.synthetic import defect_batch
from ffrt.errors import FFRTError
from ffrt.meta import InputSpec
from ffrt.preprocess import prepare_batch


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


#: Seed of the synthetic defects of the default gate set (fixed: the gate is reproducible).
GATE_DEFECT_SEED = 20_000
#: Every n-th normal (by file order) is held out for validation, as fftrain does.
VAL_EVERY = 10


def held_out_split(spec: str | Path) -> tuple[list[Path], list[Path]]:
    """(calibration normals, held-out validation normals) of a --calib spec.

    elpv:mono/poly and MVTec roots: fftrain's own train / validation split; a plain folder:
    every 10th image (by name) held out, the same rule. Calibration never sees the held-out ones.
    """
    spec_s = str(spec)
    if spec_s.startswith("elpv:"):
        split = _elpv(spec_s)
        return [s.path for s in split.train], [s.path for s in split.val]
    root = Path(spec_s)
    folder = root / "train" / "good" if (root / "train" / "good").is_dir() else root
    paths = list_images(folder, "calibration folder")
    try:
        return split_train_val(paths, VAL_EVERY)
    except DataError as e:  # pragma: no cover - VAL_EVERY is valid
        raise CalibError(str(e)) from e


def gate_images(normals: list[Path], spec: InputSpec, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The held-out normals plus each of them with one synthetic defect: uint8 images, labels 0/1."""
    good = load_images(normals, spec, progress, desc="loading held-out normals")
    bad, _ = defect_batch(good, seed=GATE_DEFECT_SEED)
    return np.concatenate([good, bad]), np.r_[np.zeros(len(good), np.int64), np.ones(len(bad), np.int64)]


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
    out = np.empty((len(paths), spec.height, spec.width, 3), dtype=np.uint8)
    for i, p in enumerate(progress_bar(paths, desc=desc, unit="img", enabled=progress)):
        try:
            out[i] = prepare_batch([p], spec).batch[0]
        except FFRTError as e:
            raise CalibError(str(e)) from e
    return out


def gate_set(calib: str | Path, spec: InputSpec, val: str | Path | None = None, val_count: int | None = None,
             progress: bool = True) -> tuple[list[Path], np.ndarray | list[Path], np.ndarray, str]:
    """(calibration paths, gate images or paths, labels, what the gate set is) of an INT8 run.

    Default: validation data, never the test split: the normals held out from calibration
    (every 10th training normal) plus each of them with a synthetic defect. ``val`` names
    another set explicitly (its test split for elpv:* and MVTec roots, or a folder of normals).
    """
    if val:
        vset = validation_set(val)
        keep = sample_evenly(list(range(len(vset.paths))), val_count or None)
        labels = vset.labels[keep]
        what = (f"--val {val}: {len(keep)} images ({int((labels == 0).sum())} normal, {int(labels.sum())} "
                "defective)")
        return calibration_paths(calib), [vset.paths[i] for i in keep], labels, what
    calib_paths, held_out = held_out_split(calib)
    held_out = sample_evenly(held_out, val_count or None)
    if len(held_out) < 2:
        raise CalibError(
            f"--calib {calib}: {len(held_out)} normal image(s) held out for the accuracy gate (every "
            "10th training normal); the gate needs at least 2. Add normal images, or name a gate set with --val DIR"
        )
    images, labels = gate_images(held_out, spec, progress=progress)
    what = (f"{len(held_out)} held-out training normals of {calib} + {len(held_out)} synthetic defects drawn "
            "on them (validation data; not the test split)")
    return calib_paths, images, labels, what

"""Dataset layouts: where training, validation and test images come from, and their batches.

Three sources:
- an MVTec-AD style folder: ``train/good``, ``test/<type>``, ``ground_truth/<type>/<name>_mask.png``
  (images of any size, gray or colour);
- a plain folder of normal images (what ``ffexport --int8 --calib DIR`` is given): split like
  ``train/good``, without a test split;
- ``elpv:mono`` / ``elpv:poly``: the ELPV solar-cell electroluminescence images from the
  optional ``elpv-dataset`` package (CC BY-NC-SA 4.0, non-commercial; only the demo uses it).

Splits are deterministic (by file order, no random state) so figures compare across runs
and tools.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import IMAGE_SUFFIXES
from .images import DataError, image_shape, read_mask, read_rgb, resize_to_model  # noqa: F401  (re-exported)

ELPV_DEFECT_MIN_PROBABILITY = 0.67


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 0 = normal, 1 = defective
    defect_type: str = "good"
    mask_path: Path | None = None


@dataclass
class DataSplit:
    name: str
    train: list[Sample]
    val: list[Sample]  # normal images held out from training
    test: list[Sample]
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "val": len(self.val),
            "test_normal": sum(s.label == 0 for s in self.test),
            "test_defective": sum(s.label == 1 for s in self.test),
        }


# --- loading ---------------------------------------------------------------------------


def load_batch(samples: list[Sample], size: int | tuple[int, int], mode: str = "stretch") -> np.ndarray:
    """uint8 [N, H, W, 3] RGB: the exact bytes the exported graph receives."""
    h, w = (size, size) if isinstance(size, int) else size
    out = np.empty((len(samples), h, w, 3), dtype=np.uint8)
    for i, s in enumerate(samples):
        out[i] = resize_to_model(read_rgb(s.path), (h, w), mode)
    return out


#: Training images with at least this many times the model input's area get a note (each side
#: about 2x): the resize to the input averages away details a few pixels wide.
DOWNSCALE_NOTE_AREA = 4.0


def _median_shape(samples: list[Sample], limit: int) -> tuple[float, int, int]:
    """(median aspect w/h, median height, median width) of up to ``limit`` images spread over the set."""
    picked = samples[:: max(1, len(samples) // limit)][:limit]
    shapes = [image_shape(s.path) for s in picked]
    aspect = float(np.median([w / h for h, w in shapes]))
    h, w = (int(np.median([sh[k] for sh in shapes])) for k in (0, 1))
    return aspect, h, w


def auto_image_size(samples: list[Sample], pixels: int = 256 * 256, step: int = 16, limit: int = 64,
                    growth: float = 1.0) -> tuple[int, int]:
    """A model input with the training images' median aspect ratio and about ``pixels``
    pixels, each side a multiple of ``step``: non-square parts are not squashed, and the
    cost stays that of the square default.

    ``growth`` > 1 (the accuracy suite's recipe ``area-growth``, not a default): images with more
    than ``DOWNSCALE_NOTE_AREA`` times ``pixels`` get a quarter of their area, up to ``growth``
    times ``pixels`` (sides rounded down, so the cap holds): with 1.5 a 640x640 board gets
    304x304 and a 300x300 cell stays at 256x256. Looks at up to ``limit`` images spread over the set."""
    if not samples:
        raise DataError("no training images to size the model from")
    aspect, h, w = _median_shape(samples, limit)
    target = min(max(pixels, h * w / DOWNSCALE_NOTE_AREA), pixels * growth)
    side = np.floor if target > pixels else np.round  # the grown area stays under its cap
    h = max(32, min(1024, int(side(np.sqrt(target / aspect) / step)) * step))
    w = max(32, min(1024, int(side(np.sqrt(target * aspect) / step)) * step))
    return h, w


def downscale_note(samples: list[Sample], size: tuple[int, int], limit: int = 64) -> str | None:
    """One line when the training images are much larger than the model input ``size``: small
    defects may be averaged away, and a larger ``--image-size`` is the lever (measured on
    DeepPCB, benchmarks/README.md "Multi-domain accuracy suite"); None otherwise."""
    if not samples:
        return None
    _, h, w = _median_shape(samples, limit)
    ratio = h * w / (size[0] * size[1])
    if ratio < DOWNSCALE_NOTE_AREA:
        return None
    scale = min(1.0, 1024 / max(h, w))  # fftrain takes sides up to 1024, in multiples of 16
    near = (max(32, int(h * scale) // 16 * 16), max(32, int(w * scale) // 16 * 16))
    return (f"the training images (median {h}x{w}) have {ratio:.1f}x the model input's area "
            f"({size[0]}x{size[1]}): defects a few pixels wide may be averaged away. If the parts' defects are "
            f"that small, train at or near their own size with the image score from every stride (e.g. "
            f"--image-size {near[0]} {near[1]} --score-strides 4 8 16; at that size the training cache may need "
            f"--augment-views 0). DeepPCB's 640x640 boards: image AUROC of development images 0.69 at 256, 0.95 "
            f"at 640 with every stride (0.93 on the held-out half; 0.77 with the default strides 8 and 16), at "
            f"6.25x the pixels per image and about 10x the training time")


# --- sources ---------------------------------------------------------------------------


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def split_train_val(normals: list, val_every: int) -> tuple[list, list]:
    """Every ``val_every``-th normal image (by order) is held out for validation; with fewer
    than ``val_every`` images, the last one is, since without any held-out image there is
    no epoch to select and no threshold to set."""
    if val_every < 2:
        raise DataError("val_every must be >= 2")
    val = [s for i, s in enumerate(normals) if i % val_every == val_every - 1]
    train = [s for i, s in enumerate(normals) if i % val_every != val_every - 1]
    if not val and len(normals) >= 2:
        train, val = list(normals[:-1]), list(normals[-1:])
    return train, val


def _normals_split(normals: list[Sample], where: Path, val_every: int) -> tuple[list, list, list[str]]:
    if len(normals) < 4:
        raise DataError(f"{where}: found {len(normals)} images; FastFlow needs at least a few dozen normal images")
    train, val = split_train_val(normals, val_every)
    notes = []
    if len(normals) < val_every:
        notes.append(
            f"only {len(normals)} normal images: {len(val)} held out for validation. The best epoch and the "
            "thresholds rest on it; collect a few dozen normal images for dependable thresholds."
        )
    return train, val, notes


def mvtec_folder(root: Path, val_every: int = 10) -> DataSplit:
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise DataError(
            f"{root}: expected an MVTec-AD style folder with train/good/ (normal images), optionally "
            "test/<type>/ and ground_truth/<type>/<name>_mask.png; or a folder of normal images"
        )
    normals = [Sample(p, 0) for p in _images_in(train_dir)]
    train, val, notes = _normals_split(normals, train_dir, val_every)
    test: list[Sample] = []
    test_dir = root / "test"
    if test_dir.is_dir():
        for type_dir in sorted(d for d in test_dir.iterdir() if d.is_dir()):
            defect = type_dir.name
            for p in _images_in(type_dir):
                if defect == "good":
                    test.append(Sample(p, 0))
                    continue
                mask = root / "ground_truth" / defect / f"{p.stem}_mask.png"
                test.append(Sample(p, 1, defect, mask if mask.is_file() else None))
    return DataSplit(str(root), train, val, test, notes)


def plain_folder(root: Path, val_every: int = 10) -> DataSplit:
    """A folder whose image files are all normal (the form ``--calib DIR`` names): split
    into train and validation like ``train/good``; no test split."""
    train, val, notes = _normals_split([Sample(p, 0) for p in _images_in(root)], root, val_every)
    notes.insert(0, f"{root}: a plain folder of images, all taken as normal (no test split)")
    return DataSplit(str(root), train, val, [], notes)


def elpv(cell_type: str, val_every: int = 10) -> DataSplit:
    """The ELPV demo split (fixed so figures compare across tools):
    normal = defect probability 0 of ``cell_type`` in dataset order; every 4th
    (index % 4 == 0) is a test normal, the rest train (every ``val_every``-th of those is
    validation); test defects = all cells of that type with probability >= 0.67."""
    if cell_type not in ("mono", "poly"):
        raise DataError(f"elpv:{cell_type}: choose elpv:mono or elpv:poly")
    try:
        import elpv_dataset
    except ImportError as e:
        raise DataError(
            "the ELPV demo data is not installed: pip install 'ffrt[demo]' (elpv-dataset, CC BY-NC-SA 4.0)"
        ) from e
    data_dir = Path(elpv_dataset.__file__).parent / "data"
    normals, defects = [], []
    with open(data_dir / "labels.csv", newline="") as f:
        for row in csv.reader(f, delimiter=" ", skipinitialspace=True):
            if not row:
                continue
            rel, probability, kind = row[0], float(row[1]), row[2]
            if kind != cell_type:
                continue
            if probability == 0.0:
                normals.append(Sample(data_dir / rel, 0))
            elif probability >= ELPV_DEFECT_MIN_PROBABILITY:
                defects.append(Sample(data_dir / rel, 1, "defective"))
    test_normals = [s for i, s in enumerate(normals) if i % 4 == 0]
    pool = [s for i, s in enumerate(normals) if i % 4 != 0]
    train, val = split_train_val(pool, val_every)
    notes = [
        "ELPV (Buerhop-Lutz et al., Deitsch et al.), CC BY-NC-SA 4.0: non-commercial use only.",
        "Image-level labels only: pixel metrics are not available on this data.",
    ]
    return DataSplit(f"elpv:{cell_type}", train, val, test_normals + defects, notes)


def resolve(spec: str, val_every: int = 10) -> DataSplit:
    """``elpv:mono``, ``elpv:poly``, an MVTec-AD style folder, or a plain folder of normal images."""
    if spec.startswith("elpv:"):
        return elpv(spec.split(":", 1)[1], val_every)
    root = Path(spec)
    if not root.exists():
        raise DataError(f"{root}: no such folder (use an MVTec-AD style folder, or elpv:mono / elpv:poly)")
    if root.is_dir() and not (root / "train").is_dir() and _images_in(root):
        return plain_folder(root, val_every)
    return mvtec_folder(root, val_every)

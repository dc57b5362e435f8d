"""An MVTec-style folder built from REAL normal images with SYNTHETIC defects drawn on them
(fftrain.synthetic), with exact pixel masks. For tests and for pixel-metric smoke checks
where real pixel ground truth does not exist (ELPV). Every figure computed on such a
folder is labelled "synthetic": it measures sensitivity to drawn defects, not accuracy on
real ones. The folder carries a ``SYNTHETIC.txt`` marker that ffeval reads.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MARKER = "SYNTHETIC.txt"


def build_synthetic_folder(
    normal_paths: list[Path], out: str | Path, size: int, n_train: int, n_test_normal: int,
    n_defect_per_kind: int, seed: int = 0,
) -> Path:
    """train/good <- the first ``n_train`` images; test/good <- the next ``n_test_normal``;
    test/<kind> <- the following images with one synthetic defect of that kind each, masks
    in ground_truth/<kind>/<name>_mask.png. Images are resized to ``size`` (RGB->BGR PNG)."""
    from fftrain.data import read_rgb, resize_to_model
    from fftrain.synthetic import KINDS, add_defect

    out = Path(out)
    need = n_train + n_test_normal + n_defect_per_kind * len(KINDS)
    if len(normal_paths) < need:
        raise ValueError(f"need {need} normal images, got {len(normal_paths)}")
    rng = np.random.default_rng(seed)
    images = [resize_to_model(read_rgb(p), size) for p in normal_paths[:need]]

    def write(path: Path, rgb: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    i = 0
    for k in range(n_train):
        write(out / "train" / "good" / f"{k:03d}.png", images[i]); i += 1
    for k in range(n_test_normal):
        write(out / "test" / "good" / f"{k:03d}.png", images[i]); i += 1
    for kind in KINDS:
        for k in range(n_defect_per_kind):
            img, mask = add_defect(images[i], rng, kind); i += 1
            write(out / "test" / kind / f"{k:03d}.png", img)
            (out / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / "ground_truth" / kind / f"{k:03d}_mask.png"), mask.astype(np.uint8) * 255)
    (out / MARKER).write_text(
        "SYNTHETIC defects (fftrain.synthetic) drawn on real normal images; pixel masks are exact.\n"
        f"seed {seed}, size {size}, {n_train} train, {n_test_normal} test normals, {n_defect_per_kind} per kind {KINDS}\n"
    )
    return out

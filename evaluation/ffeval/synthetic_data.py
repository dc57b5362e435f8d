"""An MVTec-style folder built from REAL normal images with SYNTHETIC defects drawn on them
(ffcore.synthetic), with exact pixel masks. For tests and for pixel-metric smoke checks
where real pixel ground truth does not exist (ELPV). Every figure computed on such a
folder is labelled "synthetic": it measures sensitivity to drawn defects, not accuracy on
real ones. The folder carries a ``SYNTHETIC.txt`` marker that ffeval reads.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MARKER = "SYNTHETIC.txt"


def write(path: Path, rgb: np.ndarray) -> None:
    """An RGB image as a PNG (OpenCV writes BGR), folders created; a failed write raises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write")


def build_synthetic_folder(
    normal_paths: list[Path], out: str | Path, size: int, n_train: int, n_test_normal: int,
    n_defect_per_kind: int, seed: int = 0,
) -> Path:
    """train/good <- the first ``n_train`` images; test/good <- the next ``n_test_normal``;
    test/<kind> <- the following images with one synthetic defect of that kind each, masks
    in ground_truth/<kind>/<name>_mask.png. Images are resized to ``size`` (RGB->BGR PNG)."""
    from ffcore.images import read_rgb, resize_to_model
    from ffcore.synthetic import KINDS, add_defect

    out = Path(out)
    need = n_train + n_test_normal + n_defect_per_kind * len(KINDS)
    if len(normal_paths) < need:
        raise ValueError(f"need {need} normal images, got {len(normal_paths)}")
    rng = np.random.default_rng(seed)
    images = [resize_to_model(read_rgb(p), size) for p in normal_paths[:need]]

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
        "SYNTHETIC defects (ffcore.synthetic) drawn on real normal images; pixel masks are exact.\n"
        f"seed {seed}, size {size}, {n_train} train, {n_test_normal} test normals, {n_defect_per_kind} per kind {KINDS}\n"
    )
    return out


def build_dev_folder(data: str, out: str | Path, crop: tuple[int, int] | None = None, seed: int = 0,
                     exposure_share: float = 0.5, limit: int | None = None) -> Path:
    """A pixel-level DEVELOPMENT set from a real data source (e.g. ``elpv:mono``):

    train/good   <- the source's training and validation normals (as they are)
    test/good    <- its test normals; ``exposure_share`` of them re-exposed
                    (ffcore.synthetic.EXPOSURE_SHIFTS): good parts under another exposure
    test/<kind>  <- the same test normals with one HARD synthetic defect each (kinds and
                    strengths cycled, ffcore.synthetic.HARD_KINDS / HARD_STRENGTHS), the
                    same share re-exposed, exact masks in ground_truth/<kind>/
    ``crop`` (height, width) cuts every image to its centre first, e.g. (300, 200) makes
    non-square parts out of square cells. Original resolution is kept (no resize), so the
    folder tests the runtime's own resizing too. Marked SYNTHETIC. ``limit`` caps each
    part's image count (tests).
    """
    from ffcore.data import read_rgb, resolve
    from ffcore.synthetic import EXPOSURE_SHIFTS, HARD_KINDS, HARD_STRENGTHS, add_defect, reexpose

    out = Path(out)
    split = resolve(data)
    rng = np.random.default_rng(seed)

    def load(path: Path) -> np.ndarray:
        img = read_rgb(path)
        if crop is not None:
            h, w = img.shape[:2]
            ch, cw = min(crop[0], h), min(crop[1], w)
            top, left = (h - ch) // 2, (w - cw) // 2
            img = img[top : top + ch, left : left + cw]
        return img

    def maybe_reexpose(img: np.ndarray) -> np.ndarray:
        if rng.random() < exposure_share:
            return reexpose(img, *EXPOSURE_SHIFTS[int(rng.integers(len(EXPOSURE_SHIFTS)))])
        return img

    for k, s in enumerate((split.train + split.val)[:limit]):
        write(out / "train" / "good" / f"{k:04d}.png", load(s.path))
    test_normals = [s for s in split.test if s.label == 0][:limit]
    for k, s in enumerate(test_normals):
        write(out / "test" / "good" / f"{k:04d}.png", maybe_reexpose(load(s.path)))
    for k, s in enumerate(test_normals):
        kind = HARD_KINDS[k % len(HARD_KINDS)]
        strength = HARD_STRENGTHS[(k // len(HARD_KINDS)) % len(HARD_STRENGTHS)]
        img, mask = add_defect(load(s.path), rng, kind, strength)
        write(out / "test" / kind / f"{k:04d}.png", maybe_reexpose(img))
        (out / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "ground_truth" / kind / f"{k:04d}_mask.png"), mask.astype(np.uint8) * 255)
    (out / MARKER).write_text(
        f"SYNTHETIC defects (ffcore.synthetic hard kinds {HARD_KINDS}, strengths {HARD_STRENGTHS}) drawn on the "
        f"real test normals of {data}; {exposure_share:.0%} of test images re-exposed; crop {crop}; seed {seed}.\n"
        "A development set: never used to train, select epochs or set thresholds.\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m ffeval.synthetic_data",
        description="Write a pixel-level development set (SYNTHETIC hard defects, exposure changes) from real images.",
    )
    p.add_argument("--data", default="elpv:mono", help="source of real images (elpv:mono, elpv:poly or an MVTec folder)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--crop", help="HxW centre crop of every image, e.g. 300x200 for non-square parts")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    crop = tuple(int(v) for v in args.crop.lower().split("x")) if args.crop else None
    print(build_dev_folder(args.data, args.out, crop, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

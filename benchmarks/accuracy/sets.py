"""The accuracy suite's data sets, and the two halves of each test split.

Every visible set with real or synthetic defects, each with its own split (ffcore.data):

* ``elpv-mono``, ``elpv-poly``: ELPV solar cells (real defects, image labels only);
* ``deeppcb``: DeepPCB boards laid out MVTec-style (real hand-made defects, box masks, MIT);
* ``synthetic-strip``: ELPV mono cells cut to long, narrow strips (120x300, about 1:2.5, the
  shape of a machined part on a line) with SYNTHETIC defects drawn on the test normals
  (ffcore.synthetic, its five hard kinds at three strengths, exact masks). Labelled synthetic
  wherever it is reported: it measures sensitivity to drawn defects, not accuracy on real ones.

Defaults are chosen on the ``dev`` half of each test split and reported on the ``test`` half,
never chosen on the half they are reported on. The halves are fixed by a hash of each file's
stem, so a DeepPCB board's defect-free template and its defective image (same stem) fall in
the same half (so does a synthetic strip and the normal its defect was drawn on), and figures
compare across runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ffcore import synthetic
from ffcore.data import DataSplit, Sample, read_rgb, resolve

DEEPPCB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "deeppcb"
SETS = ("elpv-mono", "elpv-poly", "deeppcb", "synthetic-strip")
SYNTHETIC_SETS = frozenset({"synthetic-strip"})
STRIP_COLUMNS = (90, 210)  # a 300x300 cell -> a 300x120 strip (height x width)
STRIP_SEED = 4242  # drawn defects of the strip's test half; no training or selection uses it


@dataclass(frozen=True)
class SuiteSet:
    name: str
    spec: str  # what fftrain / ffeval are given
    synthetic: bool

    def split(self) -> DataSplit:
        return resolve(self.spec)


def half_of(sample: Sample) -> str:
    """``dev`` or ``test``: which half of the test split a sample belongs to (by its stem)."""
    return "dev" if hashlib.sha256(sample.path.stem.encode()).digest()[0] % 2 == 0 else "test"


def halves(samples: list[Sample]) -> dict[str, np.ndarray]:
    """{"dev": indices, "test": indices} of ``samples`` by :func:`half_of`."""
    return {h: np.array([i for i, s in enumerate(samples) if half_of(s) == h]) for h in ("dev", "test")}


def suite_set(name: str, work: Path) -> SuiteSet:
    if name == "elpv-mono":
        return SuiteSet(name, "elpv:mono", False)
    if name == "elpv-poly":
        return SuiteSet(name, "elpv:poly", False)
    if name == "deeppcb":
        if not (DEEPPCB / "train" / "good").is_dir():
            raise SystemExit(f"DeepPCB not found at {DEEPPCB} (see its README in ../shared/datasets/deeppcb)")
        return SuiteSet(name, str(DEEPPCB), False)
    if name == "synthetic-strip":
        return SuiteSet(name, str(synthetic_strip(work / "data" / "synthetic-strip")), True)
    raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")


def _strip(path: Path) -> np.ndarray:
    a, b = STRIP_COLUMNS
    return cv2.cvtColor(read_rgb(path)[:, a:b], cv2.COLOR_RGB2BGR)


def synthetic_strip(root: Path) -> Path:
    """Write the synthetic strip set once (MVTec layout): ELPV mono's training and validation
    normals as strips in train/good, its test normals in test/good, and one drawn defect per
    test normal in test/<kind>/ with its mask (kinds cycled, strengths cycled)."""
    done = root / ".complete"
    if done.is_file():
        return root
    mono = resolve("elpv:mono")
    for sub in ("train/good", "test/good"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(mono.train + mono.val):
        cv2.imwrite(str(root / "train" / "good" / f"{i:04d}.png"), _strip(s.path))
    rng = np.random.default_rng(STRIP_SEED)
    normals = [s for s in mono.test if s.label == 0]
    for i, s in enumerate(normals):
        strip = _strip(s.path)
        cv2.imwrite(str(root / "test" / "good" / f"{i:04d}.png"), strip)
        kind = synthetic.HARD_KINDS[i % len(synthetic.HARD_KINDS)]
        strength = synthetic.HARD_STRENGTHS[(i // len(synthetic.HARD_KINDS)) % len(synthetic.HARD_STRENGTHS)]
        rgb = cv2.cvtColor(strip, cv2.COLOR_BGR2RGB)
        defective, mask = synthetic.add_defect(rgb, rng, kind, strength)
        (root / "test" / kind).mkdir(exist_ok=True)
        (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "test" / kind / f"{i:04d}.png"), cv2.cvtColor(defective, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "ground_truth" / kind / f"{i:04d}_mask.png"), mask.astype(np.uint8) * 255)
    (root / "README.md").write_text(
        "SYNTHETIC defects (ffcore.synthetic hard kinds) drawn on ELPV mono test normals cut to 300x120 strips; "
        "written by benchmarks/accuracy/sets.py. ELPV: CC BY-NC-SA 4.0, non-commercial.\n")
    done.write_text("ok\n")
    return root

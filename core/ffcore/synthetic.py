"""Synthetic defects drawn onto REAL normal images, with exact pixel masks.

Used where real pixel-level ground truth does not exist (ELPV has image labels only):
for model selection during training (validation AUROC on held-out normals vs. the same
normals with a drawn defect) and for pixel-level tests. Every figure computed on these
images is labelled "synthetic" where it is reported: it measures sensitivity to this
kind of defect, not accuracy on real ones.

Two families:
- ``KINDS`` (easy): thin dark cracks, dark inactive regions and bright scratches drawn at
  full contrast. Every detector finds them; an AUROC on them saturates near 1.
- ``HARD_KINDS``: what real lines miss, each at a chosen ``strength`` (0-1 scales the
  contrast): faint cracks (1-2 px, a small fraction darker than their surroundings),
  small dark or bright spots, large areas of slightly different brightness ("uneven",
  soft edges over a third of the part), a patch of different texture (blurred or
  grainy) and chipped edges. Model selection and the development sets use these, at
  several strengths, so that a choice that misses faint defects shows up in the figures.

``reexpose`` changes gain, gamma and offset of a whole image: a normal part photographed
brighter, darker or with other contrast, which must not be reported as a defect.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("crack", "dark_region", "scratch")
HARD_KINDS = ("faint_crack", "spot", "uneven", "texture", "edge_chip")


def _crack(hw: tuple[int, int], rng: np.random.Generator, thickness: int | None = None) -> np.ndarray:
    h, w = hw
    size = min(h, w)
    canvas = np.zeros((h, w), np.uint8)
    point = rng.uniform(0.15, 0.85, 2) * (w, h)
    angle = rng.uniform(0, 2 * np.pi)
    thickness = thickness or int(rng.integers(1, max(2, size // 96) + 1))
    for _ in range(int(rng.integers(3, 8))):
        angle += rng.normal(0, 0.5)  # cracks wander but keep a direction
        step = rng.uniform(0.04, 0.12) * size
        nxt = np.clip(point + step * np.array([np.cos(angle), np.sin(angle)]), 0, (w - 1, h - 1))
        cv2.line(canvas, tuple(int(v) for v in point), tuple(int(v) for v in nxt), 255, thickness, cv2.LINE_AA)
        point = nxt
    return canvas


def _blob(hw: tuple[int, int], rng: np.random.Generator, radius: tuple[float, float], blur: float,
          centre: tuple[float, float] = (0.2, 0.8)) -> np.ndarray:
    h, w = hw
    size = min(h, w)
    canvas = np.zeros((h, w), np.uint8)
    c = tuple(int(v) for v in rng.uniform(*centre, 2) * (w, h))
    axes = tuple(max(1, int(v)) for v in rng.uniform(*radius, 2) * size)
    cv2.ellipse(canvas, c, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(canvas, (0, 0), sigmaX=max(1.0, blur * size))


def _dark_region(hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    return _blob(hw, rng, (0.04, 0.12), 1 / 128)


def _edge_chip(hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A bite out of one border: a polygon that touches the image edge."""
    h, w = hw
    size = min(h, w)
    depth, span = rng.uniform(0.04, 0.10) * size, rng.uniform(0.06, 0.16) * size
    side = int(rng.integers(4))
    along = rng.uniform(0.15, 0.85) * (w if side in (0, 2) else h)
    pts = np.array([[-span / 2, 0], [-span / 4, depth], [span / 5, depth * rng.uniform(0.6, 1.0)], [span / 2, 0]])
    if side == 0:  # top
        poly = np.c_[along + pts[:, 0], pts[:, 1]]
    elif side == 2:  # bottom
        poly = np.c_[along + pts[:, 0], h - 1 - pts[:, 1]]
    elif side == 1:  # right
        poly = np.c_[w - 1 - pts[:, 1], along + pts[:, 0]]
    else:  # left
        poly = np.c_[pts[:, 1], along + pts[:, 0]]
    canvas = np.zeros((h, w), np.uint8)
    cv2.fillPoly(canvas, [np.round(poly).astype(np.int32)], 255, cv2.LINE_AA)
    return canvas


def _hard_defect(image: np.ndarray, rng: np.random.Generator, kind: str, strength: float):
    """(alpha uint8, target float image) of one hard defect; ``strength`` in (0, 1]."""
    hw = image.shape[:2]
    img = image.astype(np.float32)
    local = float(np.clip(img.mean(), 16, 240))  # contrast relative to the part's own brightness
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "faint_crack":
        alpha = _crack(hw, rng, thickness=int(rng.integers(1, 3)))
        target = img * (1 - 0.6 * strength)  # a faint crack darkens, never blacks out
    elif kind == "spot":
        alpha = _blob(hw, rng, (0.01, 0.035), 1 / 256)
        target = img + sign * 0.6 * strength * local
    elif kind == "uneven":
        alpha = _blob(hw, rng, (0.12, 0.3), 1 / 12, centre=(0.3, 0.7))
        target = img + sign * 0.25 * strength * local
    elif kind == "texture":
        alpha = _blob(hw, rng, (0.06, 0.14), 1 / 64)
        if rng.random() < 0.5:
            target = cv2.GaussianBlur(img, (0, 0), sigmaX=1.0 + 3.0 * strength)
        else:
            target = img + rng.normal(0, 0.35 * strength * local, img.shape[:2])[..., None].astype(np.float32)
    elif kind == "edge_chip":
        alpha = _edge_chip(hw, rng)
        target = np.zeros_like(img) + (1 - strength) * img  # missing material shows the dark background
    else:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS + HARD_KINDS}")
    return alpha, target


def add_defect(
    image: np.ndarray, rng: np.random.Generator, kind: str | None = None, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (a copy of ``image`` with one defect, bool mask of the defect). ``strength``
    applies to the hard kinds (contrast scale in (0, 1]); the easy kinds are drawn at full
    contrast as before."""
    hw = image.shape[:2]
    kind = kind or KINDS[int(rng.integers(len(KINDS)))]
    if kind in HARD_KINDS:
        if not 0 < strength <= 1:
            raise ValueError(f"strength {strength} must be in (0, 1]")
        alpha, target = _hard_defect(image, rng, kind, strength)
    elif kind == "crack":
        alpha = _crack(hw, rng)
        target = np.zeros_like(image, dtype=np.float32) + rng.uniform(0, 40)  # nearly black line
    elif kind == "dark_region":
        alpha = _dark_region(hw, rng)
        target = image.astype(np.float32) * rng.uniform(0.2, 0.5)
    elif kind == "scratch":
        alpha = _crack(hw, rng)
        target = np.zeros_like(image, dtype=np.float32) + rng.uniform(200, 255)
    else:
        raise ValueError(f"unknown defect kind {kind!r}; choose one of {KINDS + HARD_KINDS}")
    weight = (alpha.astype(np.float32) / 255.0)[..., None]
    out = image.astype(np.float32) * (1 - weight) + target * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), alpha > 127


def defect_batch(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One easy defect per image of a uint8 [N,H,W,3] batch; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    pairs = [add_defect(img, rng) for img in images]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


HARD_STRENGTHS = (0.35, 0.6, 1.0)


def hard_defect_plan(n: int, strengths: tuple[float, ...] = HARD_STRENGTHS) -> list[tuple[int, str, float]]:
    """(source image, kind, strength) of each image ``hard_defect_batch`` draws from ``n`` images,
    in its order: every image once per strength, kinds cycled so each kind and strength is present."""
    return [(i, HARD_KINDS[(i + j) % len(HARD_KINDS)], s) for j, s in enumerate(strengths) for i in range(n)]


def hard_defect_batch(images: np.ndarray, seed: int, strengths: tuple[float, ...] = HARD_STRENGTHS):
    """One hard defect on each image of ``hard_defect_plan``: (uint8 [N*len(strengths),H,W,3],
    masks, strength per image)."""
    rng = np.random.default_rng(seed)
    plan = hard_defect_plan(len(images), strengths)
    drawn = [add_defect(images[i], rng, kind, strength) for i, kind, strength in plan]
    return np.stack([d for d, _ in drawn]), np.stack([m for _, m in drawn]), np.array([s for _, _, s in plan])


def caught_by_kind(scores: np.ndarray, threshold: float, plan: list[tuple[int, str, float]]) -> dict:
    """Share of the drawn defects whose image score is above ``threshold`` (what the part's
    decision rejects), overall, per kind and per strength: which kinds of defect a model
    passes at its operating point, in the terms a line engineer reads. Synthetic defects on
    real normals: it ranks kinds and models, it is not the line's recall on real defects."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(plan):
        raise ValueError(f"{len(scores)} scores for {len(plan)} drawn defects")
    rejected = ~(scores <= threshold)  # the runtime's rule: score > threshold fails, and so does NaN

    def share(keep: np.ndarray) -> float:
        return float(rejected[keep].mean())

    kinds = np.array([k for _, k, _ in plan])
    levels = np.array([s for _, _, s in plan])
    return {"all": share(np.ones(len(plan), bool)),
            "by_kind": {k: share(kinds == k) for k in HARD_KINDS if (kinds == k).any()},
            "by_strength": {f"{s:g}": share(levels == s) for s in sorted(set(levels.tolist()))}}


def caught_summary(caught: dict) -> str:
    """One line for a training log of ``caught_by_kind``'s figures."""
    kinds = ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in caught["by_kind"].items())
    levels = " / ".join(caught["by_strength"])
    shares = " / ".join(f"{v:.0%}" for v in caught["by_strength"].values())
    return (f"drawn defects on the validation normals rejected at the image threshold: {caught['all']:.0%} "
            f"({kinds}; at contrast {levels}: {shares}). Synthetic: this says which kinds the model passes, "
            "not its recall on the line's real defects")


def reexpose(image: np.ndarray, gain: float = 1.0, gamma: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """The same scene photographed with another exposure: out = 255*(gain*(x/255)^gamma) + offset."""
    x = image.astype(np.float32) / 255.0
    y = 255.0 * gain * np.power(x, gamma) + offset
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


EXPOSURE_SHIFTS = (
    # (gain, gamma, offset): brighter, darker, lower and higher contrast, an ageing lamp.
    (1.3, 1.0, 0.0), (0.7, 1.0, 0.0), (1.0, 0.75, 0.0), (1.0, 1.35, 0.0), (0.85, 1.0, 20.0), (1.15, 1.1, -15.0),
)

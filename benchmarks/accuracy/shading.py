"""A low-frequency shading map beside the flows' maps (issue 21's "shading channel"), no retraining.

    python benchmarks/accuracy/shading.py [--sets ...] [--recipe steps4-epochs24]

Exposure augmentation teaches the flows that a brighter or darker part is normal, and the flows
read each feature cell locally, so a large soft brightness change on one region of a part reads
as normal too. This measures whether a separate, exposure-free shading model gives back what
that loses: each image's luminance (BT.601, at the model input) as a log, standardized per image
(a global gain or gamma then changes nothing: log(g * Y^gamma) = log g + gamma log Y), averaged
per cell of the stride-``s`` grid; per cell a Gaussian fitted on the training normals; the map
is 0.5 * ((x - mean) / std)^2 per cell (std floored at a tenth of its median over cells, so a
cell that never varies on normals cannot dominate). That map joins the trained flows' maps
either as one more scale of the real head (fftrain.head.AnomalyHead, via heads.py), or summed at
matched spread (``summed``); the gated rows use it only on sets whose training normals' shading
has a layout (``layout_share``). Each variant is re-thresholded on the validation normals by
fftrain's rule. The baselines: the checkpoint as it ships, and the suite's "refit head (as
shipped)".

Robustness: the test normals are also scored as another exposure would show them (one view
each, drawn as the trainer draws its re-exposed views: gain, gamma, offset, noise and a shift of
up to 3% of each side; seed EXPOSURE_SEED), and every row reports the false-reject rate of those
views at its threshold. The shading's cells are tied to the part's position, so variants fit
the Gaussians with the trainer's re-exposed, shifted views of the training images too, and
with a tolerance of one cell (each cell matched to the nearest of its neighbours' Gaussians),
and with every image registered to the training layout first (``Aligner``).

Needs the recipe's checkpoints (suite.py --recipe R trains them). Writes
``benchmarks/results/accuracy-shading.json``; prints DEV and TEST image AUROC per set with the
mean and the worst set, and the per-type figures of the synthetic strip. Choices on DEV only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import heads
import sets
import suite
from ffcore.operating_point import operating_point
from fftrain.model import LUMA_WEIGHTS

LUMA = np.array(LUMA_WEIGHTS, np.float32)  # BT.601, as the model's luma input computes it
STD_FLOOR = 0.1  # of the median cell std
SHADING_STRIDES = (8, 16)
#: A set whose shading layout share is below this gets no shading term in the gated rows (set
#: before the gated rows were computed, between DeepPCB's 0.002 and ELPV poly's 0.50).
LAYOUT_CUTOFF = 0.25
EXPOSURE_SEED = 77
MAX_SHIFT = 0.1  # of each side: the largest translation Aligner undoes
FLOWS = "flows (refit head as shipped)"
PER_SCALE = "flows, refit head standardized per scale instead of per position"
SHIPPED = "flows as shipped (the checkpoint's head, standardized with the views too; its stored threshold)"


def log_luma_standardized(images: np.ndarray) -> np.ndarray:
    """[N, H, W] float32: log luminance of uint8 NHWC images, standardized per image."""
    y = images.astype(np.float32) @ LUMA
    x = np.log(y + 8.0)  # +8: sensor noise and offset near black are not shading
    flat = x.reshape(len(x), -1)
    mean, std = flat.mean(1)[:, None, None], flat.std(1)[:, None, None]
    return (x - mean) / np.maximum(std, 1e-3)


class Aligner:
    """Registers each image's shading to the training normals' mean layout before the cells are
    taken: the translation by phase correlation of the standardized log luminance at a quarter
    of the input size (Hann-windowed, sub-pixel), at most MAX_SHIFT of each side, undone with
    reflected borders. The reference is the mean of the training originals, re-averaged once
    after aligning them to it."""

    def __init__(self, train: np.ndarray):
        self.reference = self._low(train).mean(0)
        self.reference = self._low(self.align(train)).mean(0)

    @staticmethod
    def _low(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[1:]
        return np.stack([cv2.resize(m, (w // 4, h // 4), interpolation=cv2.INTER_AREA) for m in x]).astype(np.float64)

    def align(self, x: np.ndarray) -> np.ndarray:
        """[N, H, W] standardized log luminance -> the same, each translated onto the reference."""
        h, w = x.shape[1:]
        window = cv2.createHanningWindow((w // 4, h // 4), cv2.CV_64F)
        out = np.empty_like(x)
        for i, (full, low) in enumerate(zip(x, self._low(x))):
            (dx, dy), _ = cv2.phaseCorrelate(self.reference, low, window)
            dx, dy = (float(np.clip(4 * d, -MAX_SHIFT * n, MAX_SHIFT * n)) for d, n in ((dx, w), (dy, h)))
            out[i] = cv2.warpAffine(full, np.float32([[1, 0, -dx], [0, 1, -dy]]), (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
        return out


def cells(x: np.ndarray, stride: int) -> torch.Tensor:
    """[N, 1, H/s, W/s] cell means of [N, H, W] maps."""
    t = torch.from_numpy(x)[:, None]
    return torch.nn.functional.avg_pool2d(t, stride, stride)


class ShadingModel:
    """Per cell a Gaussian of the training cells; ``tolerance`` r: a cell is compared with every
    Gaussian within r cells and keeps the smallest z^2 (a part that moved by up to r cells
    still matches its layout)."""

    def __init__(self, train: torch.Tensor, tolerance: int = 0):
        self.mean = train.mean(0, keepdim=True)
        std = train.std(0, keepdim=True)
        self.std = torch.clamp(std, min=STD_FLOOR * float(std.median()))
        self.tolerance = tolerance

    def raw_map(self, x: torch.Tensor) -> torch.Tensor:
        r = self.tolerance
        if r == 0:
            return 0.5 * ((x - self.mean) / self.std) ** 2
        h, w = x.shape[-2:]
        mean, std = (torch.nn.functional.pad(t, (r, r, r, r), mode="replicate") for t in (self.mean, self.std))
        return torch.stack([0.5 * ((x - mean[..., dy:dy + h, dx:dx + w]) / std[..., dy:dy + h, dx:dx + w]) ** 2
                            for dy in range(2 * r + 1) for dx in range(2 * r + 1)]).amin(0)

    @staticmethod
    def standard(raw: torch.Tensor) -> torch.Tensor:
        """The raw map 0.5 z^2 as (z^2 - 1) / sqrt(2): mean 0 and std 1 per cell where z is standard
        normal, the per-position standardization in closed form (no second fit)."""
        return (2.0 * raw - 1.0) / 2.0 ** 0.5


def layout_share(train_cells: torch.Tensor) -> float:
    """The share of the training normals' shading variance that the per-cell means explain (R^2
    of "each cell is its own mean"): near 1 for aligned parts with a fixed lighting layout,
    near 0 when every image's shading is its own (DeepPCB's unaligned boards)."""
    c = train_cells.double()
    return float(1.0 - c.var(0).mean() / c.var())


def shading_maps(images: dict[str, np.ndarray], stride: int, views: np.ndarray | None = None,
                 tolerance: int = 0, aligned: bool = False) -> tuple[dict[str, torch.Tensor], float]:
    """({"train", ...}: raw shading maps [N, 1, h, w] of each set of uint8 NHWC images; the
    Gaussians fitted on "train", plus ``views`` when given: the trainer's re-exposed, shifted
    views of the training images, as fftrain fits the head; ``aligned``: every image registered
    to the training layout first (Aligner)), the layout share."""
    shading = {k: log_luma_standardized(v) for k, v in images.items()}
    if views is not None:
        shading["views"] = log_luma_standardized(views)
    if aligned:
        aligner = Aligner(shading["train"])
        shading = {k: aligner.align(v) for k, v in shading.items()}
    c = {k: cells(v, stride) for k, v in shading.items() if k != "views"}
    fit = c["train"] if views is None else torch.cat([c["train"], cells(shading["views"], stride)])
    model = ShadingModel(fit, tolerance)
    return {k: model.raw_map(v) for k, v in c.items()}, layout_share(c["train"])


def summed(model, raw: dict, shade: dict, samples, masks, halves, fitted: bool = True) -> dict:
    """Flows (head as shipped, refit) + the shading term in the flows' units: the shading map
    standardized per position like the flows' (the real head, one scale), its image score's
    spread on the training normals matched to the flows' (w = std_f / std_h): image score
    s_f + w (s_h - mean_h), map m_f + w m_h. Threshold by fftrain's rule on the validation normals.
    ``fitted=False``: the shading map standardized in closed form (ShadingModel.standard) instead."""
    flows = heads.HeadVariant("as shipped", tuple(range(len(raw["train"]))), score_scales=heads.SHIPPED)
    alone = heads.HeadVariant("shading", (0,), normalization="position" if fitted else "none")
    if not fitted:
        shade = {k: ShadingModel.standard(v) for k, v in shade.items()}
    fh, hh = heads.fitted_head(model, flows, raw["train"]), heads.fitted_head(model, alone, [shade["train"]])
    out = {k: (heads.scores_and_maps(fh, flows, raw[k]), heads.scores_and_maps(hh, alone, [shade[k]])) for k in raw}
    (sf, _), (sh, _) = out["train"]
    w = sf.std() / max(sh.std(), 1e-12)
    combined = {k: (f[0] + w * (h[0] - sh.mean()), f[1] + w * h[1]) for k, (f, h) in out.items()}
    s, m = combined["test"]
    row = suite.scorer_row(s, m, operating_point(combined["val"][0], suite.TARGET_FRR).threshold, samples, masks, halves)
    return {**row, "weight": float(w), **exposed_rejects(combined["exposed"][0], row["threshold"], samples, halves)}


def exposed_rejects(scores: np.ndarray, threshold: float, samples, halves) -> dict:
    """False-reject rate, per half, of the test normals re-exposed (``exposed`` in run_set) at ``threshold``."""
    normals = np.array([i for i, s in enumerate(samples) if s.label == 0])
    out = {}
    for half, idx in halves.items():
        keep = np.isin(normals, idx)
        out[f"{half}_exposed_false_reject_rate"] = float((scores[keep] > threshold).mean())
    return out


def run_set(name: str, recipe: str, work: Path) -> dict:
    from ffcore.data import load_batch
    from fftrain.augment import augmented_views
    from fftrain.train import TrainSettings, evaluate_features, extract_features, raw_scale_maps, training_views

    ss = sets.suite_set(name, work)
    split = ss.split()
    model, payload = suite.saved_checkpoint(name, recipe, work)
    size, mode, test = model.config.image_size, model.config.resize_mode, split.test
    halves = sets.halves(test)
    masks = suite.quarter_masks(test, size) if any(s.mask_path is not None for s in test) else None
    suite.log(f"== {name}: backbone features")
    feats = suite.split_features(model, split)
    images = {k: load_batch(v, size, mode) for k, v in (("train", split.train), ("val", split.val), ("test", test))}
    # The test normals as another exposure would show them: one view each, drawn as the trainer
    # draws its re-exposed views (gain, gamma, offset, noise, a few pixels of shift).
    images["exposed"] = augmented_views(images["test"][[s.label == 0 for s in test]], 1, EXPOSURE_SEED)
    feats["exposed"] = extract_features(model, images["exposed"], progress=False)
    raw = {k: raw_scale_maps(model, v) for k, v in feats.items()}
    # The checkpoint as it ships: its head was standardized with the re-exposed views too.
    _, test_maps, test_scores = evaluate_features(model, feats["test"])
    exposed_scores = evaluate_features(model, feats["exposed"])[2].numpy().astype(np.float64)
    del feats
    threshold = payload["calibration"]["image_threshold"]
    as_shipped = suite.scorer_row(test_scores.numpy().astype(np.float64), test_maps[:, 0].numpy(), threshold, test,
                                  masks, halves)
    as_shipped.update(exposed_rejects(exposed_scores, threshold, test, halves))
    flows = tuple(range(len(raw["train"])))  # 0, 1, 2: strides 4, 8, 16
    shipped_score = tuple(model.head.score_scales or flows)
    extra = len(flows)  # the index the shading map gets as one more scale
    shipped = heads.HeadVariant("as shipped", flows, score_scales=heads.SHIPPED)
    rows = {SHIPPED: as_shipped, FLOWS: suite.variant_row(model, shipped, raw, test, masks, halves)}
    exposed_scores = heads.scores_and_maps(heads.fitted_head(model, shipped, raw["train"]), shipped, raw["exposed"])[0]
    rows[FLOWS].update(exposed_rejects(exposed_scores, rows[FLOWS]["threshold"], test, halves))
    # The per-position standardization ties the flows' map to positions too; per scale it does not.
    per_scale = heads.HeadVariant("per scale", flows, normalization="scale", score_scales=shipped_score)
    rows[PER_SCALE] = suite.variant_row(model, per_scale, raw, test, masks, halves)
    exposed_scores = heads.scores_and_maps(heads.fitted_head(model, per_scale, raw["train"]), per_scale, raw["exposed"])[0]
    rows[PER_SCALE].update(exposed_rejects(exposed_scores, rows[PER_SCALE]["threshold"], test, halves))
    views = training_views(images["train"], TrainSettings(progress=False), model.config.seed)
    shares = {}
    for s in SHADING_STRIDES:
        shade, shares[str(s)] = shading_maps(images, s)
        with_shade = {k: [*raw[k], shade[k]] for k in raw}
        rows[f"shading at stride {s} alone"] = suite.variant_row(
            model, heads.HeadVariant("shading", (extra,)), with_shade, test, masks, halves)
        rows[f"flows + shading at stride {s}, one more scale of the mean"] = suite.variant_row(
            model, heads.HeadVariant("+shading", (*flows, extra), score_scales=(*shipped_score, extra)),
            with_shade, test, masks, halves)
        rows[f"flows + shading at stride {s}, summed at matched spread"] = summed(model, raw, shade, test, masks, halves)
        rows[f"flows + shading at stride {s}, summed at matched spread, closed-form standardization"] = summed(
            model, raw, shade, test, masks, halves, fitted=False)
        if s == SHADING_STRIDES[0]:
            for tolerance in (0, 1):
                pooled, _ = shading_maps(images, s, views, tolerance)
                rows[f"flows + shading at stride {s}, summed at matched spread, closed-form standardization, "
                     f"fitted with the views{', 1-cell tolerance' if tolerance else ''}"] = summed(
                    model, raw, pooled, test, masks, halves, fitted=False)
            for with_views in (False, True):
                aligned, _ = shading_maps(images, s, views if with_views else None, aligned=True)
                rows[f"flows + shading at stride {s}, summed at matched spread, closed-form standardization, "
                     f"aligned{', fitted with the views' if with_views else ''}"] = summed(
                    model, raw, aligned, test, masks, halves, fitted=False)
    for label, row in rows.items():
        suite.log(f"  {label:56s} DEV image AUROC {row['dev']['image_auroc']:.3f}")
    return {"set": name, "synthetic": ss.synthetic, "image_size": list(size), "layout_share": shares, "variants": rows}


def gated(row: dict, label: str, stride: int) -> str:
    """The row a set gets when the shading term is used only where its layout share is >= LAYOUT_CUTOFF."""
    return label if row["layout_share"][str(stride)] >= LAYOUT_CUTOFF else FLOWS


def table(result: dict, half: str) -> str:
    rows = result["rows"]
    names = [r["set"] for r in rows]
    lines = ["| scorer | " + " | ".join(names) + " | mean | worst |", "|---" * (len(names) + 3) + "|"]
    labels = [(label, lambda r, label=label: label) for label in rows[0]["variants"]]
    labels += [(f"{label}, where the layout share >= {LAYOUT_CUTOFF}", lambda r, label=label, s=s: gated(r, label, s))
               for s in SHADING_STRIDES for label in rows[0]["variants"] if label.startswith("flows + shading at stride "
                                                                                        f"{s},")]
    for label, pick in labels:
        vals = [r["variants"][pick(r)][half]["image_auroc"] for r in rows]
        worst = int(np.argmin(vals))
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals)
                     + f" | {np.mean(vals):.3f} | {vals[worst]:.3f} ({names[worst]}) |")
    lines.append("| layout share of the shading variance, strides " + "/".join(map(str, SHADING_STRIDES)) + " | "
                 + " | ".join("/".join(f"{r['layout_share'][str(s)]:.3f}" for s in SHADING_STRIDES) for r in rows) + " | | |")
    for label, pick in labels:
        if all(f"{half}_exposed_false_reject_rate" in r["variants"][pick(r)] for r in rows):
            lines.append(f"  false rejects of the re-exposed test normals, {label}: " + " ".join(
                f"{r['set']} {r['variants'][pick(r)][f'{half}_exposed_false_reject_rate']:.1%}" for r in rows))
    for r in rows:
        for label, v in r["variants"].items():
            types = v[half].get("per_type_auroc") or {}
            pix = v[half].get("pixel_auroc")
            if types or pix is not None:
                lines.append(f"  {r['set']} / {label}: " + (f"pixel {pix:.3f} " if pix is not None else "")
                             + " ".join(f"{t} {a:.3f}" for t, a in types.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(sets.SETS))
    p.add_argument("--recipe", default="steps4-epochs24", choices=sorted(suite.RECIPES))
    p.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--json", type=Path, default=suite.RESULTS / "accuracy-shading.json")
    p.add_argument("--table", action="store_true", help="print the tables of --json without computing anything")
    args = p.parse_args(argv)
    if args.table:
        return print_tables(json.loads(args.json.read_text()))
    from ffeval.machine import describe, one_line

    machine = describe()
    suite.log(f"machine: {one_line(machine)}")
    rows = [run_set(n, args.recipe, args.work) for n in args.sets.split(",")]
    result = {"schema": "ffrt.accuracy-shading", "recipe": args.recipe, "machine": machine,
              "command": ["python", "benchmarks/accuracy/shading.py", *(argv if argv is not None else sys.argv[1:])],
              "splits": "dev = the half of each test split defaults are chosen on; test = the half reported (sets.py)",
              "rows": rows}
    args.json.write_text(json.dumps(result, indent=1))
    suite.log(f"wrote {args.json}")
    return print_tables(result)


def print_tables(result: dict) -> int:
    for half in ("dev", "test"):
        print(f"\nimage AUROC, {half.upper()} half\n")
        print(table(result, half))
    return 0


if __name__ == "__main__":
    sys.exit(main())

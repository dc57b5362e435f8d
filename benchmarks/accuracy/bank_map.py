"""The memory bank's distances in the anomaly map too, not only in the image score (no retraining).

    python benchmarks/accuracy/bank_map.py RECIPE OUT.json
    e.g. RECIPE = steps4-epochs24 (fftrain's default flows; suite.py trains it)

The shipped memory bank (fftrain.memory_bank) adds its largest nearest-patch distance to the
image score; the map a user sees, its mask and the pixel threshold stay the flows'. Issue 21's
set A localizes badly through the flows (pixel AUROC 0.667) and far better by the
nearest-neighbour distance on the same features (0.815), and on the suite the reference's map
beats the flows' on the synthetic strip (0.942 against 0.92) and loses on DeepPCB. So: per suite
set, the recipe's flows map plus WEIGHT times the stride-16 bank's distance map (each patch's
distance to its nearest bank vector, upsampled bilinearly to the map as the head upsamples its
scales, standardized by the validation normals' pixels), and whether training could choose the
weight per line: the pixel AUROC of the validation normals' synthetic defects against their
masks (what a trainer can see) beside the test split's pixel AUROC and AUPRO where masks exist
(DeepPCB's boxes, the strip's synthetic masks). Image scores are not changed here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sets  # noqa: E402
import suite  # noqa: E402

WORK = Path("runs/accuracy")
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def quarter_synthetic_masks(masks: np.ndarray) -> np.ndarray:
    h, w = masks.shape[1] // 4, masks.shape[2] // 4
    return np.stack([cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.25 for m in masks])


def pixel_figures(maps: np.ndarray, masks: np.ndarray, samples, halves: dict) -> dict:
    """Pixel AUROC and AUPRO per half of quarter-resolution maps (normals and defects with masks)."""
    from ffcore import metrics as M

    out = {}
    for h, idx in halves.items():
        keep = idx[np.array([samples[i].label == 0 or samples[i].mask_path is not None for i in idx])]
        out[h] = round(M.pixel_auroc(masks[keep], maps[keep]), 4)
        out[h + "_aupro"] = round(M.aupro(masks[keep], maps[keep]), 4)
    return out


def run_set(name: str, recipe: str) -> dict:
    from ffcore import metrics as M
    from ffcore import synthetic
    from ffcore.data import load_batch
    from fftrain.bank_fit import bank_nearest, fit_memory_bank, new_bank
    from fftrain.train import evaluate_features, extract_features

    ss = sets.suite_set(name, WORK)
    split = ss.split()
    model, _ = suite.saved_checkpoint(name, recipe, WORK)
    model.eval()
    size = tuple(model.config.image_size)
    feats = suite.split_features(model, split)
    with torch.no_grad():
        defects, defect_masks, _ = synthetic.hard_defect_batch(load_batch(split.val, size, model.config.resize_mode),
                                                               seed=model.config.seed + 1000)
        feats["synthetic"] = extract_features(model, defects, progress=False)
        bank = new_bank(model, feats["train"], len(split.train))
        flows = {k: evaluate_features(model, feats[k], with_bank=False)[1][:, 0].numpy() for k in ("val", "synthetic", "test")}
        dist = {k: bank.distance_map(bank_nearest(bank, feats[k]), size)[:, 0].numpy() for k in ("val", "synthetic", "test")}
        # fftrain's own fit on the same flows (memory_bank "auto"): its map must be the row of the weight it picks.
        product = model.__class__(model.config.model_copy(update={"memory_bank": "auto"}), load_pretrained=False)
        product.load_state_dict(model.state_dict())
        fit_memory_bank(product.eval(), feats["train"], len(split.train), feats["val"], (feats["synthetic"], defect_masks),
                        print)
        product_map = suite.quarter(evaluate_features(product, feats["test"])[1][:, 0].numpy())
    del feats
    loc, scale = float(dist["val"].mean()), float(dist["val"].std())
    syn_masks = quarter_synthetic_masks(defect_masks)
    val_masks = np.zeros((len(flows["val"]), *syn_masks.shape[1:]), bool)
    test_masks = suite.quarter_masks(split.test, size) if any(t.mask_path for t in split.test) else None
    halves = sets.halves(split.test)
    rows, check = {}, {}
    for w in WEIGHTS:
        fused = {k: flows[k] + np.float32(w) * (dist[k] - loc) / scale for k in flows}
        q = {k: suite.quarter(v) for k, v in fused.items()}
        check[w] = round(M.pixel_auroc(np.r_[val_masks, syn_masks], np.r_[q["val"], q["synthetic"]]), 4)
        if test_masks is not None:
            rows[f"{w:g}"] = pixel_figures(q["test"], test_masks, split.test, halves)
    if test_masks is not None:
        rows["product"] = pixel_figures(product_map, test_masks, split.test, halves)
    out = {"synthetic_pixel_auroc": check, "test_pixel": rows, "bank_vectors": int(len(bank.bank)),
           "product": {"weight": product.config.memory_bank_weight, "map_weight": product.config.memory_bank_map_weight}}
    print(name, json.dumps(out), flush=True)
    return out


def main(argv: list[str]) -> int:
    out = {name: run_set(name, argv[0]) for name in sets.SETS}
    from ffeval.machine import describe, one_line

    report = {"machine": one_line(describe()),
              "command": "python benchmarks/accuracy/bank_map.py " + " ".join(argv), "sets": out}
    Path(argv[1]).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))

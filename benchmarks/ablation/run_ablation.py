"""Ablation of the training recipe on the development sets (not part of CI).

Trains one FastFlow per variant with the real trainer (fftrain.train), then scores the
PyTorch model (the same head the exported graph runs) on:

- ELPV mono / poly test split (real defects, image labels): image AUROC, and recall and
  false-reject rate at the model's stored threshold (2% FRR target on validation normals);
- dev-synthetic: the ELPV *test* normals of the same cell type with HARD synthetic defects
  drawn in at three strengths (ffcore.synthetic; a seed no training or selection uses):
  image AUROC, pixel AUROC, AUPRO. SYNTHETIC defects on real images;
- exposure shift: the same test normals re-exposed six ways (ffcore.synthetic.EXPOSURE_SHIFTS):
  the share rejected at the stored threshold (should stay near the target FRR).

Nothing here is used to pick an epoch or a threshold: those come from the training split.
Usage:
    python benchmarks/ablation/run_ablation.py --data elpv:mono --variant NAME [--variant NAME ...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ffcore import synthetic
from fftrain.config import ModelConfig
from fftrain.data import load_batch, resolve
from ffcore.metrics import aupro, pixel_auroc, roc_auc
from fftrain.head import AnomalyHead
from fftrain.train import TrainSettings, calibrate, evaluate_features, extract_features, raw_scale_maps, train

BASE = dict(backbone="efficientnet_lite0", image_size=(256, 256), flow_steps=8, conv3x3_only=True)
TRAINED = {
    # name: (config overrides, settings overrides). Every trained model is then scored with
    # each head variant in HEADS (the head is fitted after training, so no retraining).
    "smoke": (dict(image_size=(64, 64), flow_steps=1), dict(epochs=1)),  # checks this script, not a result
    "old_ratio": (dict(hidden_ratio=2.0), dict(epochs=8, augment_views=0)),  # ratio 1.0 in the old (doubled) meaning
    "paper": (dict(hidden_ratio=1.0), dict(epochs=8, augment_views=0)),
    "paper_aug4": (dict(hidden_ratio=1.0), dict(epochs=8, augment_views=4)),
    "lite1_aug4": (dict(backbone="efficientnet_lite1", hidden_ratio=1.0), dict(epochs=8, augment_views=4)),
    "lite2_aug4": (dict(backbone="efficientnet_lite2", hidden_ratio=1.0), dict(epochs=8, augment_views=4)),
}
HEADS = [(norm, red, 0.0) for norm in ("none", "scale", "position") for red in ("topk_mean", "max")] + [
    ("position", "topk_mean", 2.0), ("position", "topk_mean", 4.0)]

def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


@torch.no_grad()
def scores_and_maps(model, feats):
    _, maps, scores = evaluate_features(model, feats)
    return scores.numpy().astype(np.float64), maps[:, 0].numpy()


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    rejected = scores > threshold
    return {
        "recall": float(rejected[labels == 1].mean()) if (labels == 1).any() else None,
        "false_reject_rate": float(rejected[labels == 0].mean()),
    }


def eval_features(model, split, config) -> dict:
    """Backbone features of every evaluation set, computed once per trained model."""
    size, mode = config.image_size, config.resize_mode
    test = split.test
    normals = load_batch([s for s in test if s.label == 0], size, mode)
    defects, masks, _ = synthetic.hard_defect_batch(normals, seed=777)
    shifted = np.concatenate([
        np.stack([synthetic.reexpose(im, *shift) for im in normals[:60]]) for shift in synthetic.EXPOSURE_SHIFTS
    ])
    feats = lambda images: extract_features(model, images, progress=False)  # noqa: E731
    return {
        "labels": np.array([s.label for s in test]), "test": feats(load_batch(test, size, mode)),
        "normals": feats(normals), "defects": feats(defects), "masks": masks, "shifted": feats(shifted),
    }


def evaluate_head(model, ev: dict, thr: float) -> dict:
    labels = ev["labels"]
    test_scores, _ = scores_and_maps(model, ev["test"])
    real = {"image_auroc": roc_auc(labels, test_scores), **rates(test_scores, labels, thr)}
    n_scores, n_maps = scores_and_maps(model, ev["normals"])
    d_scores, d_maps = scores_and_maps(model, ev["defects"])
    masks = ev["masks"]
    y = np.r_[np.zeros(len(n_scores)), np.ones(len(d_scores))]
    all_masks = np.concatenate([np.zeros((len(n_maps),) + masks.shape[1:], bool), masks])
    all_maps = np.concatenate([n_maps, d_maps])
    dev = {
        "image_auroc": roc_auc(y, np.r_[n_scores, d_scores]),
        "pixel_auroc": pixel_auroc(all_masks, all_maps),
        "aupro": aupro(all_masks, all_maps),
        **rates(np.r_[n_scores, d_scores], y, thr),
    }
    s_scores, _ = scores_and_maps(model, ev["shifted"])
    exposure = {"false_reject_rate": float((s_scores > thr).mean()), "n": int(len(s_scores))}
    return {"real_test": real, "dev_synthetic": dev, "exposure_shift": exposure}


def run_variant(name: str, data: str, out: Path) -> list[dict]:
    cfg_over, set_over = TRAINED[name]
    config = ModelConfig(**{**BASE, **cfg_over})
    settings = TrainSettings(**{"batch_size": 32, "progress": False, "keep_features": True, **set_over})
    split = resolve(data)
    t0 = time.perf_counter()
    result = train(config, split, settings, log=lambda m: print(f"[{name}] {m}", flush=True))
    train_s = time.perf_counter() - t0
    model = result.model.eval()
    ev = eval_features(model, split, config)
    rows = []
    for norm, reduction, blur in HEADS:
        model.head = AnomalyHead(config.image_size, reduction, config.topk_fraction,
                                 map_shapes=[(h, w) for _, h, w in model.feature_shapes], normalization=norm,
                                 blur_sigma=blur)
        model.head.fit_normalization(raw_scale_maps(model, result.features["train"]))
        _, val_maps, val_scores = evaluate_features(model, result.features["val"])
        thr = calibrate(val_maps, val_scores, settings.target_frr)["image_threshold"]
        row = {
            "variant": f"{name}+{norm}+{reduction}{f'+blur{blur:g}' if blur else ''}", "trained": name,
            "map_normalization": norm, "reduction": reduction, "blur_sigma": blur,
            "data": data, "config": config.model_dump(mode="json"),
            "settings": {k: v for k, v in vars(settings).items()},
            "best_epoch": result.best_epoch, "train_s": round(train_s, 1),
            "flow_params": sum(p.numel() for p in model.flows.parameters()), "threshold": thr,
            **evaluate_head(model, ev, thr),
            "machine": f"{cpu_name()}, {torch.get_num_threads()} threads",
        }
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("variant", "data", "best_epoch", "real_test", "dev_synthetic",
                                             "exposure_shift")}), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}__{data.replace(':', '_')}.json").write_text(json.dumps(rows, indent=1))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="elpv:mono")
    p.add_argument("--variant", action="append", choices=sorted(TRAINED), required=True)
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    args = p.parse_args(argv)
    for v in args.variant:
        run_variant(v, args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

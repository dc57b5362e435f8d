"""The multi-domain accuracy suite (issue 21): one command, not part of CI.

    python benchmarks/accuracy/suite.py [--sets elpv-mono,elpv-poly,deeppcb,synthetic-strip]
                                        [--recipe default] [--work runs/accuracy] [--update]

Per set (sets.py) the recipe is trained with the real trainer (fftrain.train, 12 epochs: the
demo's until fftrain's default became 24, which recipe ``epochs24`` is; every lever was
measured against the 12-epoch ``default``; input size from the training images as fftrain
chooses it); a checkpoint already at ``--work/<set>/<recipe>/model.pt`` is reused. Then, on the same backbone features:

* **flows**: the trained model as it ships (PyTorch; the exported graph computes the same
  scores within 1e-5, tests/export), at its stored threshold (fftrain: validation normals,
  2% false-reject target);
* **head variants** (heads.py): the same flows with other scales, standardization or score,
  each re-calibrated on the validation normals by the same rule (ffcore.operating_point);
* **reference**: nearest-neighbour distance to a memory bank of the same features
  (reference.py, PatchCore's recipe), its threshold from the validation normals by the same rule.

Figures per half of the test split (sets.py: ``dev`` to choose on, ``test`` to report):
image AUROC, per defect type AUROC, pixel AUROC and AUPRO (FPR <= 0.3) where masks exist, at a
quarter of the model's input size (64x64 for 256x256; a mask pixel is defect when a quarter of
it is), recall and false-reject rate at the threshold; and training time. The summary gives
per set, the mean over sets and the worst set, on each half.

Writes ``--work/<set>/<recipe>/suite.json`` (a later run reuses it while it is newer than the
checkpoint) and ``benchmarks/results/accuracy-suite-<recipe>.json``
with the machine (with ``--update``, only the rows of ``--sets`` are replaced and the file says
where the kept rows came from); ``table.py`` prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

import heads
import reference
import sets
from ffcore import metrics as M
from ffcore.data import load_batch, read_mask
from ffcore.operating_point import operating_point

RESULTS = Path(__file__).resolve().parents[1] / "results"
EPOCHS = 12
TARGET_FRR = 0.02
#: The demo recipe every lever was measured against: fftrain's model defaults until 2026-12-06,
#: which had the FastFlow paper's 8 coupling steps (4 since) and no memory bank (auto since:
#: recipe bank-steps4-epochs24 is fftrain's default). Pinned, so each recipe's committed figures
#: still reproduce bit for bit.
BASELINE = {"flow_steps": 8, "memory_bank": "off"}
RECIPES = {
    # name: (ModelConfig overrides, TrainSettings overrides) on top of BASELINE and the demo recipe
    "default": ({}, {}),
    # The default until 2026-12-05: the image score from every stride (today: strides 8 and 16).
    "all-strides": ({"score_strides": (4, 8, 16)}, {}),
    # CFLOW-AD on the demo recipe (its head variants say whether strides 8+16 would help it too).
    "cflow": ({"model": "cflow"}, {}),
    "no-exposure-aug": ({}, {"augment_views": 0}),
    "lite2": ({"backbone": "efficientnet_lite2"}, {}),
    "res320": ({"pixels": 320 * 320}, {}),  # the input area fftrain sizes the model to (default 256 * 256)
    "res448": ({"pixels": 448 * 448}, {}),  # DeepPCB's boards closer to their native 640x640 (3x the compute)
    # Images over 4x the input area get a quarter of theirs, up to 1.5x (DeepPCB 304x304; no other set changes).
    "area-growth": ({"area_growth": 1.5}, {}),
    # PatchCore's 3x3 local aggregation of the features before the flows (the reference scorer has it).
    "pool3": ({"feature_pooling": 3}, {}),
    # Twice the demo's epochs (the cosine schedule stretched over them): does the density fit still gain?
    "epochs24": ({}, {"epochs": 24}),
    # The flows' capacity, one dimension at a time: twice the subnets' hidden channels (the
    # default until the paper's width was adopted), half, 1.5x and a quarter of the coupling steps.
    "width2": ({"hidden_ratio": 2.0}, {}),
    "steps4": ({"flow_steps": 4}, {}),
    "steps12": ({"flow_steps": 12}, {}),
    "steps2": ({"flow_steps": 2}, {}),
    # Half the coupling steps at fftrain's default epochs (recipe epochs24 is its baseline).
    "steps4-epochs24": ({"flow_steps": 4}, {"epochs": 24}),
    # 3 and 2 steps at fftrain's epochs: between the 4 adopted and the 2 DeepPCB preferred at 12.
    "steps3-epochs24": ({"flow_steps": 3}, {"epochs": 24}),
    "steps2-epochs24": ({"flow_steps": 2}, {"epochs": 24}),
    # pool3 (measured at 8 steps, 12 epochs) on today's default flows: 4 steps, 24 epochs.
    "pool3-steps4-epochs24": ({"feature_pooling": 3, "flow_steps": 4}, {"epochs": 24}),
    # Twice the re-exposed views per training image on today's default: do the flows then hold
    # re-exposed, shifted good parts better (the shipped ones reject 9-11% of ELPV poly's)?
    "views8-steps4-epochs24": ({"flow_steps": 4}, {"epochs": 24, "augment_views": 8}),
    # The memory bank beside the flows where training's synthetic check keeps it (fftrain's default
    # since 2026-12-06; the flows are those of steps4-epochs24, which trains the same way before it).
    "bank-steps4-epochs24": ({"flow_steps": 4, "memory_bank": "auto"}, {"epochs": 24}),
    # pool3 with the bank on today's default: the second candidate of a per-line choice between
    # pooled and unpooled flows by training's synthetic check (benchmarks/accuracy/pooling_choice.py).
    "pool3-bank-steps4-epochs24": ({"feature_pooling": 3, "flow_steps": 4, "memory_bank": "auto"}, {"epochs": 24}),
    # DeepPCB's 640x640 boards at their native size, today's default otherwise, and its like-for-like
    # baseline at 256x256. Both without re-exposed views: at 640 the training cache with the default
    # 4 views would need about 43 GB (fftrain.train.cache_bytes); without them about 11.
    "noaug-bank-steps4-epochs24": ({"flow_steps": 4, "memory_bank": "auto"}, {"epochs": 24, "augment_views": 0}),
    "native640-noaug-bank-steps4-epochs24": ({"pixels": 640 * 640, "flow_steps": 4, "memory_bank": "auto"},
                                             {"epochs": 24, "augment_views": 0}),
    # pool3 at stride 16 only (pool3at16-steps4-epochs24) was measured at commit 890ea79, whose
    # ModelConfig.feature_pooling_strides was taken out again (not adopted; benchmarks/README.md).
}


def log(msg: str) -> None:
    print(msg, flush=True)


def trained(name: str, split, recipe: str, folder: Path) -> tuple[object, dict, float | None]:
    """(model, checkpoint payload, training seconds or None when reused)."""
    from fftrain import checkpoint
    from fftrain.config import ModelConfig
    from fftrain.data import auto_image_size
    from fftrain.train import TrainSettings, train, train_info

    path = folder / "model.pt"
    seconds = None
    if not path.is_file():
        cfg_over, set_over = RECIPES[recipe]
        default = ModelConfig()
        cfg_over = {**BASELINE, **cfg_over}
        pixels = cfg_over.pop("pixels", default.height * default.width)
        size = auto_image_size(split.train, pixels, growth=cfg_over.pop("area_growth", 1.0))
        config = ModelConfig(image_size=size, **cfg_over)
        settings = TrainSettings(**{"epochs": EPOCHS, "progress": False, **set_over})
        t0 = time.perf_counter()
        result = train(config, split, settings, log=lambda m: log(f"  [{name} {recipe}] {m}"))
        seconds = time.perf_counter() - t0
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint.save(path, result.model, result.calibration, train_info(result, split))
    model, payload = checkpoint.load(path)
    if seconds is None:
        seconds = sum(v for k, v in payload["train_info"]["timings"].items() if k in ("feature_cache_s", "train_s"))
    return model.eval(), payload, seconds


def saved_checkpoint(name: str, recipe: str, work: Path) -> tuple[object, dict]:
    """(model in eval mode, checkpoint payload) of a recipe already trained on a set, for the
    scripts that only evaluate; exits saying how to train it when it is missing."""
    from fftrain import checkpoint

    path = work / name / recipe / "model.pt"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: train it first (python benchmarks/accuracy/suite.py --recipe {recipe} "
                         f"--sets {name} --no-reference)")
    model, payload = checkpoint.load(path)
    return model.eval(), payload


def quarter(maps: np.ndarray) -> np.ndarray:
    n, h, w = maps.shape
    return np.stack([cv2.resize(m, (w // 4, h // 4), interpolation=cv2.INTER_AREA) for m in maps])


def quarter_masks(samples, size: tuple[int, int]) -> np.ndarray:
    h, w = size[0] // 4, size[1] // 4
    out = []
    for s in samples:
        if s.mask_path is None:
            out.append(np.zeros((h, w), bool))
        else:
            m = read_mask(s.mask_path, None).astype(np.float32)
            out.append(cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) >= 0.25)
    return np.stack(out)


def figures(scores: np.ndarray, maps: np.ndarray | None, threshold: float, samples, masks: np.ndarray | None,
            idx: np.ndarray) -> dict:
    labels = np.array([samples[i].label for i in idx])
    s = scores[idx]
    rejected = s > threshold
    out = {
        "n_normal": int((labels == 0).sum()), "n_defective": int((labels == 1).sum()),
        "image_auroc": M.roc_auc(labels, s),
        "recall": float(rejected[labels == 1].mean()),
        "false_reject_rate": float(rejected[labels == 0].mean()),
        "per_type_auroc": {},
    }
    types = sorted({samples[i].defect_type for i in idx if samples[i].label == 1})
    if len(types) > 1:
        for t in types:
            keep = np.array([samples[i].label == 0 or samples[i].defect_type == t for i in idx])
            out["per_type_auroc"][t] = M.roc_auc(labels[keep], s[keep])
    if masks is not None and maps is not None:
        pixel = np.array([samples[i].label == 0 or samples[i].mask_path is not None for i in idx])
        mk, mp = masks[idx[pixel]], maps[idx[pixel]]
        out["pixel_auroc"] = M.pixel_auroc(mk, mp)
        out["aupro"] = M.aupro(mk, mp)
    return out


def scorer_row(scores, maps, threshold, samples, masks, halves, extra: dict | None = None) -> dict:
    q = quarter(maps) if masks is not None else None
    return {"threshold": float(threshold), **(extra or {}),
            **{h: figures(scores, q, threshold, samples, masks, idx) for h, idx in halves.items()}}


def split_features(model, split) -> dict[str, list[torch.Tensor]]:
    """Backbone features of the split's train, val and test images, at the model's input."""
    from fftrain.train import extract_features

    size, mode = model.config.image_size, model.config.resize_mode
    with torch.no_grad():
        return {k: extract_features(model, load_batch(v, size, mode), progress=False)
                for k, v in (("train", split.train), ("val", split.val), ("test", split.test))}


def variant_row(model, variant: heads.HeadVariant, raw: dict, samples, masks, halves) -> dict:
    """One head variant (heads.py) on per-scale plain maps ``raw`` ({"train", "val", "test"}):
    fitted on the training normals, its threshold by fftrain's rule on the validation normals,
    the test split's figures."""
    head = heads.fitted_head(model, variant, raw["train"])
    val_scores, val_maps = heads.scores_and_maps(head, variant, raw["val"])
    s, m = heads.scores_and_maps(head, variant, raw["test"])
    if variant.post is not None:
        level = heads.region_level(heads.scores_and_maps(head, variant, raw["train"])[1])
        val_scores, s = (heads.post_scores(x, variant.post, level) for x in (val_maps, m))
    return scorer_row(s, m, operating_point(val_scores, TARGET_FRR).threshold, samples, masks, halves)


def fold_thresholds(model, payload: dict, split, feats: dict, folds: int) -> tuple[dict, float]:
    """The thresholds fftrain --threshold-folds would have stored for this checkpoint: its
    training pool rebuilt as fftrain.train builds it (the images and their re-exposed views,
    same seeds), the initial weights rebuilt from the seed, fftrain.folds for the rest."""
    from dataclasses import fields

    from fftrain.folds import out_of_fold_scores
    from fftrain.model import AnomalyModel
    from fftrain.train import (TrainSettings, calibrate_scores, evaluate_features, extract_features, for_kind, map_peaks,
                               training_views)

    info = payload["train_info"]
    names = {f.name for f in fields(TrainSettings)}
    settings = for_kind(TrainSettings(**{**{k: v for k, v in info["settings"].items() if k in names},
                                         "threshold_folds": folds, "progress": False}), model.kind)
    size, mode = model.config.image_size, model.config.resize_mode
    pool = feats["train"]
    if settings.augment_views:
        images = load_batch(split.train, size, mode)
        views = training_views(images, settings, model.config.seed)
        pool = [torch.cat([a, b]) for a, b in zip(feats["train"], extract_features(model, views, progress=False))]
    torch.manual_seed(model.config.seed)
    start = AnomalyModel(model.config).state_dict()
    t0 = time.perf_counter()
    held_out = out_of_fold_scores(model, start, pool, len(split.train), settings, info["best_epoch"],
                                  lambda m: log(f"  {m}"))
    scores, peaks = held_out.scores, held_out.peaks
    seconds = time.perf_counter() - t0
    _, val_maps, val_scores = evaluate_features(model, feats["val"])
    return calibrate_scores(np.r_[val_scores.numpy().astype(np.float64), scores], np.r_[map_peaks(val_maps), peaks],
                            settings.target_frr, f"validation normals (n={len(val_scores)}) and training normals "
                            f"scored out of fold (n={len(scores)}, {folds} folds)"), seconds


def run_set(name: str, recipe: str, work: Path, with_reference: bool, folds: int = 0) -> dict:
    from fftrain.train import calibrate, evaluate_features, raw_scale_maps

    ss = sets.suite_set(name, work)
    folder = work / name / recipe
    saved = folder / "suite.json"
    model_pt = folder / "model.pt"
    earlier = {}
    if saved.is_file() and model_pt.is_file() and saved.stat().st_mtime > model_pt.stat().st_mtime:
        earlier = json.loads(saved.read_text())
        if ("reference" in earlier or not with_reference) and ("flows_folds" in earlier or not folds) \
                and "flows_val_rule" in earlier and all(v.name in earlier.get("head_variants", {}) for v in heads.VARIANTS):
            log(f"== {name} ({recipe}): figures of an earlier run ({saved})")
            return earlier
    split = ss.split()
    log(f"== {name} ({recipe}): model")
    model, payload, train_s = trained(name, split, recipe, folder)
    size = model.config.image_size
    test = split.test
    halves = sets.halves(test)
    has_masks = any(s.mask_path is not None for s in test)
    masks = quarter_masks(test, size) if has_masks else None

    log(f"== {name}: backbone features (train {len(split.train)}, val {len(split.val)}, test {len(test)})")
    feats = split_features(model, split)
    _, test_maps, test_scores = evaluate_features(model, feats["test"])
    row = {"set": name, "spec": ss.spec, "synthetic": ss.synthetic, "recipe": recipe, "counts": split.counts(),
           "image_size": list(size), "train_s": round(train_s, 1), "halves": {h: len(v) for h, v in halves.items()},
           "config": model.config.model_dump(mode="json"), "best_epoch": payload["train_info"]["best_epoch"]}
    row["flows"] = scorer_row(test_scores.numpy().astype(np.float64), test_maps[:, 0].numpy(),
                              payload["calibration"]["image_threshold"], test, masks, halves,
                              {"threshold_source": payload["calibration"]["source"],
                               "threshold_estimate": payload["calibration"].get("image_estimate")})
    # Today's rule on the validation normals alone (a checkpoint written before ffcore.operating_point
    # stored an order statistic): what --threshold-folds is compared with.
    _, val_maps, val_scores = evaluate_features(model, feats["val"])
    val_rule = calibrate(val_maps, val_scores, TARGET_FRR)
    row["flows_val_rule"] = scorer_row(test_scores.numpy().astype(np.float64), test_maps[:, 0].numpy(),
                                       val_rule["image_threshold"], test, masks, halves,
                                       {"threshold_source": val_rule["source"], "threshold_estimate": val_rule["image_estimate"]})
    if folds and "flows_folds" not in earlier:
        log(f"== {name}: thresholds from {folds} folds of the training normals")
        calibration, seconds = fold_thresholds(model, payload, split, feats, folds)
        row["flows_folds"] = scorer_row(test_scores.numpy().astype(np.float64), test_maps[:, 0].numpy(),
                                        calibration["image_threshold"], test, masks, halves,
                                        {"threshold_source": calibration["source"], "folds_s": round(seconds, 1),
                                         "threshold_estimate": calibration["image_estimate"]})
    del test_maps

    log(f"== {name}: head variants")
    raw = {k: raw_scale_maps(model, v) for k, v in feats.items()}
    row["head_variants"] = {}
    for variant in heads.VARIANTS:
        if max(variant.scales) < len(raw["train"]):
            row["head_variants"][variant.name] = variant_row(model, variant, raw, test, masks, halves)
    del raw

    if with_reference and "reference" not in earlier:
        log(f"== {name}: reference memory bank")
        t0 = time.perf_counter()
        bank = reference.MemoryBank(feats["train"])
        fit_s = time.perf_counter() - t0
        val_scores, _ = bank.score(feats["val"], size)
        t0 = time.perf_counter()
        s, m = bank.score(feats["test"], size)
        per_image_ms = (time.perf_counter() - t0) / len(test) * 1e3
        row["reference"] = scorer_row(s, m, operating_point(val_scores, TARGET_FRR).threshold, test, masks, halves,
                                      {"bank_vectors": int(len(bank.bank)), "patches_seen": bank.patches_seen,
                                       "fit_s": round(fit_s, 1), "score_ms_per_image_from_features": round(per_image_ms, 2)})
    for key in ("reference", "flows_folds"):  # what an earlier run of the same checkpoint computed
        if key not in row and key in earlier:
            row[key] = earlier[key]
    saved.write_text(json.dumps(row, indent=1))
    return row


def summary(rows: list[dict], scorer: str = "flows", half: str = "test") -> dict:
    """Mean and worst set of each figure for one scorer on one half."""
    out = {}
    for key in ("image_auroc", "pixel_auroc", "aupro", "recall"):
        vals = {r["set"]: r[scorer][half][key] for r in rows if r[scorer][half].get(key) is not None}
        if vals:
            worst = min(vals, key=vals.get)
            out[key] = {"mean": float(np.mean(list(vals.values()))), "worst": vals[worst], "worst_set": worst}
    frr = {r["set"]: r[scorer][half]["false_reject_rate"] for r in rows}
    worst = max(frr, key=frr.get)
    out["false_reject_rate"] = {"mean": float(np.mean(list(frr.values()))), "worst": frr[worst], "worst_set": worst}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(sets.SETS))
    p.add_argument("--recipe", default="default", choices=sorted(RECIPES))
    p.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--no-reference", action="store_true", help="skip the memory-bank reference scorer")
    p.add_argument("--threshold-folds", type=int, default=0, metavar="K",
                   help="also the thresholds fftrain --threshold-folds K would store (row flows_folds)")
    p.add_argument("--json", type=Path, default=None,
                   help="write the results here instead of results/accuracy-suite-RECIPE.json (a side measurement "
                   "on some sets that must not replace the recipe's file)")
    p.add_argument("--update", action="store_true",
                   help="replace only the rows of --sets in the recipe's results file and keep its other rows (for a "
                   "change that touches only some sets; the file lists the kept rows)")
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line

    machine = describe()
    log(f"machine: {one_line(machine)}")
    rows = [run_set(n, args.recipe, args.work, not args.no_reference, args.threshold_folds) for n in args.sets.split(",")]
    path = args.json or RESULTS / f"accuracy-suite-{args.recipe}.json"
    kept = []
    if args.update and path.is_file():
        earlier = json.loads(path.read_text())
        run = {r["set"] for r in rows}
        kept = [r for r in earlier["rows"] if r["set"] not in run]
        order = list(sets.SETS)
        rows = sorted(kept + rows, key=lambda r: order.index(r["set"]) if r["set"] in order else len(order))
        # Where each kept row was measured: the earlier file's own run, or the run it kept it from.
        origin = {e["set"]: e for e in earlier.get("rows_from_earlier_runs", [])}
        kept = [origin.get(r["set"], {"set": r["set"], "command": earlier.get("command"),
                                      "machine": one_line(earlier["machine"])}) for r in kept]
        log(f"kept the rows of {', '.join(k['set'] for k in kept)} from {path.name}")
    out = {"schema": "ffrt.accuracy-suite", "recipe": args.recipe, "machine": machine,
           "command": ["python", "benchmarks/accuracy/suite.py", *(argv if argv is not None else sys.argv[1:])],
           **({"rows_from_earlier_runs": kept} if kept else {}),
           "splits": "dev = the half of each test split defaults are chosen on; test = the half reported (sets.py)",
           "rows": rows, "summary": {h: {sc: summary(rows, sc, h) for sc in ("flows", "flows_val_rule", "flows_folds", "reference") if all(sc in r for r in rows)}
                                     for h in ("dev", "test")}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

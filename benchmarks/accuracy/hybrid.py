"""The flows' image score fused with a memory bank's on the same backbone features (no retraining).

    python benchmarks/accuracy/hybrid.py RECIPE OUT.json
    e.g. RECIPE = steps4-epochs24 (fftrain's default; suite.py trains it)

Issue 21's reference scorer (reference.py) separates some sets better than the flows on the same
features (ELPV mono; the issue's set A) and others worse (ELPV poly, DeepPCB, the strip). This
asks whether the two together beat either: per suite set, the recipe's checkpoint scores the
validation and test images; a memory bank (reference.MemoryBank: 3x3-aggregated patches, a 1%
greedy coreset of the training patches) is fitted on the training normals' features, at strides
8+16 as the reference, and at stride 16 alone (a bank a shipped graph could afford: 16x fewer
patch comparisons than at stride 8). A fused score is the flows' score plus WEIGHT times the bank's,
each standardized by its own validation normals' mean and spread; thresholds by fftrain's rule
(ffcore.operating_point, suite.TARGET_FRR) on the validation normals. Since a bank that does not
separate a set's defects only adds noise, the row "chosen" picks, per set, among the flows alone
and the flows with bank16 at WEIGHTS, by what a trainer can see: the image AUROC of the validation
normals against the same normals with fftrain's hard synthetic defects drawn in (the epoch
selection's "synthetic" figure). Prints DEV and TEST image
AUROC per set with the mean and the worst set, and the bank's size and scoring time from
features (this machine). Choices on DEV only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ensemble  # noqa: E402
import reference  # noqa: E402
import sets  # noqa: E402
import suite  # noqa: E402

WORK = Path("runs/accuracy")
BANKS = {"bank8+16": (1, 2), "bank16": (2,)}  # reference.SCALES indices: strides 8+16, stride 16


def run_set(name: str, recipe: str) -> dict:
    from ffcore import synthetic
    from ffcore.data import load_batch
    from ffcore.metrics import roc_auc
    from fftrain.memory_bank import WEIGHTS
    from fftrain.bank_fit import fit_memory_bank
    from fftrain.train import evaluate_features, extract_features

    ss = sets.suite_set(name, WORK)
    split = ss.split()
    model, _ = suite.saved_checkpoint(name, recipe, WORK)
    size = model.config.image_size
    feats = suite.split_features(model, split)
    with torch.no_grad():
        # fftrain.train's validation defects: the same images, seed and strengths.
        defects, defect_masks, _ = synthetic.hard_defect_batch(load_batch(split.val, size, model.config.resize_mode),
                                                               seed=model.config.seed + 1000)
        feats["synthetic"] = extract_features(model, defects, progress=False)
        scores = {"flows": {k: evaluate_features(model, feats[k])[2].numpy().astype(np.float64)
                            for k in ("val", "test", "synthetic")}}
    costs = {}
    for bank_name, scales in BANKS.items():
        t0 = time.perf_counter()
        bank = reference.MemoryBank(feats["train"], scales=scales)
        fit_s = time.perf_counter() - t0
        scores[bank_name] = {k: bank.score(feats[k], size)[0] for k in ("val", "synthetic")}
        t0 = time.perf_counter()
        scores[bank_name]["test"] = bank.score(feats["test"], size)[0]
        costs[bank_name] = {"vectors": int(len(bank.bank)), "dims": int(bank.bank.shape[1]), "fit_s": round(fit_s, 1),
                            "ms_per_image_from_features": round((time.perf_counter() - t0) / len(split.test) * 1e3, 2)}
    halves = sets.halves(split.test)

    def standardized(s: str, k: str) -> np.ndarray:
        return (scores[s][k] - scores[s]["val"].mean()) / scores[s]["val"].std()

    fused = {s: scores[s] for s in scores}
    for bank_name in BANKS:
        for w in WEIGHTS if bank_name == "bank16" else (1.0,):
            fused[f"flows+{w:g}*{bank_name}"] = {k: standardized("flows", k) + w * standardized(bank_name, k)
                                                 for k in ("val", "test", "synthetic")}
    rows = {s: ensemble.figures(v["test"], v["val"], split.test, halves, ss.synthetic) for s, v in fused.items()}
    labels = np.r_[np.zeros(len(scores["flows"]["val"])), np.ones(len(scores["flows"]["synthetic"]))]
    synthetic_auroc = {s: round(roc_auc(labels, np.r_[v["val"], v["synthetic"]]), 4) for s, v in fused.items()
                       if "synthetic" in v}
    candidates = ["flows"] + [f"flows+{w:g}*bank16" for w in WEIGHTS]
    chosen = max(candidates, key=lambda s: synthetic_auroc[s])  # ties: the first, the flows alone
    rows["chosen"] = {**rows[chosen], "choice": chosen}
    # The same choice as fftrain makes it (fftrain.bank_fit.fit_memory_bank, memory_bank "auto"), on
    # the recipe's flows: its figures must equal the row "chosen".
    product = model.__class__(model.config.model_copy(update={"memory_bank": "auto"}), load_pretrained=False)
    product.load_state_dict(model.state_dict())
    fit_memory_bank(product.eval(), feats["train"], len(split.train), feats["val"], (feats["synthetic"], defect_masks),
                    print)
    fused["product"] = {k: evaluate_features(product, feats[k])[2].numpy().astype(np.float64) for k in ("val", "test")}
    rows["product"] = {**ensemble.figures(fused["product"]["test"], fused["product"]["val"], split.test, halves,
                                          ss.synthetic), "weight": product.config.memory_bank_weight}
    print(name, json.dumps({"rows": rows, "synthetic_auroc": synthetic_auroc, "banks": costs}), flush=True)
    return {"rows": rows, "synthetic_auroc": synthetic_auroc, "banks": costs}


def main(argv: list[str]) -> int:
    out = {name: run_set(name, argv[0]) for name in sets.SETS}
    ensemble.report(out, {name: v["rows"] for name, v in out.items()}, Path(argv[1]), "benchmarks/accuracy/hybrid.py",
                    argv)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))

"""The image score's reduction chosen per line by training's synthetic check (no retraining).

    python benchmarks/accuracy/score_choice.py RECIPE OUT.json
    e.g. RECIPE = steps4-epochs24 (fftrain's default flows; suite.py trains it)

The head variants (heads.py) showed one reduction helping one set and hurting another: the
largest pixel as the image score raises DeepPCB (small defects: a few pixels of the map) and
lowers both ELPV sets (defects spread over a cell), against the mean of the top 1%. Like the
memory bank's weight (fftrain.memory_bank), the choice can be made per line on what a trainer
sees: the AUROC of the validation normals against the same normals with fftrain's hard synthetic
defects. Per suite set, with the recipe's shipped head (its standardization; only the reduction
changes):

- each reduction in REDUCTIONS, the flows alone, and with the memory bank at the weight
  fftrain.memory_bank.choose_weight picks for that reduction's scores ("+bank");
- "shipped": the top 1% with the bank as fftrain adds it today;
- "chosen": per set, the reduction (with its bank) whose final score separates the synthetic
  defects best, ties to the shipped one.

Prints DEV and TEST image AUROC per set, with the mean and the worst set, and the synthetic AUROCs.
Choices on DEV only.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ensemble  # noqa: E402
import sets  # noqa: E402
import suite  # noqa: E402

WORK = Path("runs/accuracy")
#: name -> (AnomalyHead.reduction, share of the map's pixels averaged); the first is the shipped one.
REDUCTIONS = {"top1%": ("topk_mean", 0.01), "top0.5%": ("topk_mean", 0.005), "top0.25%": ("topk_mean", 0.0025),
              "top0.1%": ("topk_mean", 0.001), "max": ("max", None)}


def run_set(name: str, recipe: str) -> dict:
    from ffcore import synthetic
    from ffcore.data import load_batch
    from fftrain.bank_fit import bank_nearest, new_bank
    from fftrain.memory_bank import choose_weight, separation
    from fftrain.train import evaluate_features, extract_features

    ss = sets.suite_set(name, WORK)
    split = ss.split()
    model, _ = suite.saved_checkpoint(name, recipe, WORK)
    model.eval()
    size = model.config.image_size
    feats = suite.split_features(model, split)
    with torch.no_grad():
        defects = synthetic.hard_defect_batch(load_batch(split.val, size, model.config.resize_mode),
                                              seed=model.config.seed + 1000)[0]
        feats["synthetic"] = extract_features(model, defects, progress=False)
        bank = new_bank(model, feats["train"], len(split.train))
        distances = {k: bank_nearest(bank, feats[k]).amax(1).numpy().astype(np.float64) for k in ("val", "synthetic", "test")}
        head = model.head
        flows = {}
        for r, (reduction, fraction) in REDUCTIONS.items():
            head.reduction = reduction
            if fraction is not None:
                head.topk = max(1, math.ceil(fraction * head.image_size[0] * head.image_size[1]))
            flows[r] = {k: evaluate_features(model, feats[k], with_bank=False)[2].numpy().astype(np.float64)
                        for k in ("val", "synthetic", "test")}
    halves = sets.halves(split.test)

    def standardized(s: dict, k: str) -> np.ndarray:
        return (s[k] - s["val"].mean()) / s["val"].std()

    scores, weights = {}, {}
    for r, f in flows.items():
        scores[r] = f
        w, _ = choose_weight(f, distances, "auto")
        weights[r] = w
        scores[r + "+bank"] = {k: standardized(f, k) + w * standardized(distances, k) for k in f}
    synthetic_auroc = {s: round(separation(v["val"], v["synthetic"]), 4) for s, v in scores.items()}
    rows = {s: ensemble.figures(v["test"], v["val"], split.test, halves, ss.synthetic) for s, v in scores.items()}
    rows["shipped"] = {**rows["top1%+bank"], "choice": "top1%+bank"}
    finals = [r + "+bank" for r in REDUCTIONS]
    chosen = max(finals, key=lambda s: (synthetic_auroc[s], -finals.index(s)))
    rows["chosen"] = {**rows[chosen], "choice": chosen}
    out = {"rows": rows, "synthetic_auroc": synthetic_auroc, "bank_weights": weights}
    print(name, json.dumps(out), flush=True)
    return out


def main(argv: list[str]) -> int:
    out = {name: run_set(name, argv[0]) for name in sets.SETS}
    ensemble.report(out, {name: v["rows"] for name, v in out.items()}, Path(argv[1]),
                    "benchmarks/accuracy/score_choice.py", argv)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))

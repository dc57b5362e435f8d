"""Good parts under another exposure: the false-reject rate of re-exposed, shifted test normals
at each recipe's stored threshold (no retraining).

    python benchmarks/accuracy/exposure.py --recipes steps4-epochs24,views8-steps4-epochs24 [--sets ...]

A line's light and camera drift and its parts move by a few pixels; the trainer teaches the
flows that as normal with re-exposed views of every training image (gain, gamma, offset, noise,
a shift of up to 3% of each side). Here every test normal is drawn once more as such a view
(fftrain.augment.augmented_views, seed shading.EXPOSURE_SEED: the same views as shading.py's
robustness column) and scored by the checkpoint as it ships; the rate of those views above the
stored threshold is set beside the plain test normals' rate, the recall and the image AUROC, per
half. Beside the stored threshold: fftrain's rule on the validation normals together with
VAL_VIEWS re-exposed views of each (what calibrating on the views would cost in recall).
Needs the recipes' checkpoints (suite.py --recipe R trains them). Writes
``benchmarks/results/accuracy-exposure.json``. Choices on DEV only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sets  # noqa: E402
import suite  # noqa: E402
from ffcore.operating_point import operating_point  # noqa: E402
from shading import EXPOSURE_SEED, exposed_rejects  # noqa: E402

#: Re-exposed views of each validation normal in the "with views" threshold (the trainer's count).
VAL_VIEWS = 4


def run_set(name: str, recipe: str, work: Path) -> dict:
    from ffcore.data import load_batch
    from fftrain.augment import augmented_views
    from fftrain.train import evaluate_features, extract_features

    split = sets.suite_set(name, work).split()
    model, payload = suite.saved_checkpoint(name, recipe, work)
    test = split.test
    images = load_batch(test, model.config.image_size, model.config.resize_mode)
    exposed = augmented_views(images[[s.label == 0 for s in test]], 1, EXPOSURE_SEED)
    val = load_batch(split.val, model.config.image_size, model.config.resize_mode)
    val_views = augmented_views(val, VAL_VIEWS, EXPOSURE_SEED + 1)
    scores = {k: evaluate_features(model, extract_features(model, x, progress=False))[2].numpy().astype(np.float64)
              for k, x in (("test", images), ("exposed", exposed), ("val", val), ("val_views", val_views))}
    # The stored threshold, and fftrain's rule on the validation normals together with
    # VAL_VIEWS re-exposed views of each: what calibrating on the views would cost in recall.
    thresholds = {"stored": payload["calibration"]["image_threshold"],
                  "with views": operating_point(np.r_[scores["val"], scores["val_views"]], suite.TARGET_FRR).threshold}
    halves = sets.halves(test)
    row = {"set": name, "recipe": recipe, "thresholds": thresholds}
    for half, idx in halves.items():
        row[half] = {}
        for which, t in thresholds.items():
            f = suite.figures(scores["test"], None, t, test, None, idx)
            row[half]["image_auroc"] = f["image_auroc"]
            row[half][which] = {"false_reject_rate": f["false_reject_rate"], "recall": f["recall"]}
    for which, t in thresholds.items():
        for key, rate in exposed_rejects(scores["exposed"], t, test, halves).items():
            row[key.split("_", 1)[0]][which]["exposed_false_reject_rate"] = rate
    for which in thresholds:
        d = row["dev"][which]
        suite.log(f"  {name} {recipe}, threshold {which}: DEV AUROC {row['dev']['image_auroc']:.3f}, recall "
                  f"{d['recall']:.2f}, false rejects {100 * d['false_reject_rate']:.1f}%, re-exposed "
                  f"{100 * d['exposed_false_reject_rate']:.1f}%")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="steps4-epochs24")
    p.add_argument("--sets", default=",".join(sets.SETS))
    p.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--json", type=Path, default=suite.RESULTS / "accuracy-exposure.json")
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line

    machine = one_line(describe())
    suite.log(f"machine: {machine}")
    rows = [run_set(n, r, args.work) for r in args.recipes.split(",") for n in args.sets.split(",")]
    args.json.write_text(json.dumps({"machine": machine, "command": " ".join(["python", *sys.argv]), "rows": rows},
                                    indent=1))
    for half in ("dev", "test"):
        print(f"\n{half.upper()} half, per set: image AUROC; recall / false rejects / re-exposed false rejects")
        for r in args.recipes.split(","):
            for which in ("stored", "with views"):
                cells = [x[half] for x in rows if x["recipe"] == r]
                print(f"  {r:24s} {which:10s}", " | ".join(
                    f"{c['image_auroc']:.3f}; {c[which]['recall']:.2f} / {100 * c[which]['false_reject_rate']:.1f}% / "
                    f"{100 * c[which]['exposed_false_reject_rate']:.1f}%" for c in cells))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

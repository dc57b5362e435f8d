"""Two trained flow sets on the same backbone features, their image scores fused (no retraining).

    python benchmarks/accuracy/ensemble.py RECIPES PAIRS OUT.json
    e.g. RECIPES = steps4-epochs24,pool3-steps4-epochs24  PAIRS = steps4-epochs24+pool3-steps4-epochs24

Each recipe's checkpoint (suite.py trains them; same backbone, input size and colour) scores the
validation and test images of every suite set from one feature extraction. A pair's score is the
sum of both scores, each standardized by its own validation normals' mean and spread; thresholds
by fftrain's rule (ffcore.operating_point, suite.TARGET_FRR) on the validation normals. Prints
DEV and TEST image AUROC per set with the mean and the worst set, and the synthetic strip's large
soft unevenness. Pairs of unpooled flows of another depth are the control: how much any second
flow set adds. Choices on DEV only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sets  # noqa: E402
import suite  # noqa: E402
from ffcore.operating_point import operating_point  # noqa: E402

WORK = Path("runs/accuracy")


def figures(test: np.ndarray, val: np.ndarray, samples, halves: dict, synthetic: bool) -> dict:
    """Per half (suite.figures): image AUROC, the large soft unevenness' AUROC (synthetic sets), and
    the false-reject rate and recall at fftrain's threshold on the validation normals' scores ``val``."""
    threshold = operating_point(val, suite.TARGET_FRR).threshold
    out = {}
    for h, idx in halves.items():
        f = suite.figures(test, None, threshold, samples, None, idx)
        out[h] = round(f["image_auroc"], 4)
        if synthetic:
            out[h + "_uneven"] = round(f["per_type_auroc"]["uneven"], 4)
        out[h + "_frr"] = round(f["false_reject_rate"], 4)
        out[h + "_recall"] = round(f["recall"], 4)
    return out


def run_set(name: str, recipes: list[str], pairs: list[list[str]]) -> dict:
    from ffcore.data import load_batch
    from fftrain.train import evaluate_features, extract_features

    ss = sets.suite_set(name, WORK)
    split = ss.split()
    models = {r: suite.saved_checkpoint(name, r, WORK)[0] for r in recipes}
    first = models[recipes[0]]
    size, mode = first.config.image_size, first.config.resize_mode
    if any(m.config.image_size != size for m in models.values()):
        raise SystemExit(f"{name}: the recipes' input sizes differ; their flows cannot share one feature extraction")
    with torch.no_grad():
        feats = {k: extract_features(first, load_batch(v, size, mode), progress=False)
                 for k, v in (("val", split.val), ("test", split.test))}
        scores = {r: {k: evaluate_features(m, f)[2].numpy().astype(np.float64) for k, f in feats.items()}
                  for r, m in models.items()}
    halves = sets.halves(split.test)

    def standardized(r: str, k: str) -> np.ndarray:
        return (scores[r][k] - scores[r]["val"].mean()) / scores[r]["val"].std()

    rows = {r: figures(scores[r]["test"], scores[r]["val"], split.test, halves, ss.synthetic) for r in recipes}
    for a, b in pairs:
        rows[f"{a}+{b}"] = figures(standardized(a, "test") + standardized(b, "test"),
                                   standardized(a, "val") + standardized(b, "val"), split.test, halves, ss.synthetic)
    print(name, json.dumps(rows), flush=True)
    return rows


def report(saved: dict, rows: dict[str, dict], path: Path, script: str, argv: list[str]) -> None:
    """Write ``saved`` (per set) with the machine and the command to ``path``; print each row's DEV
    and TEST image AUROC per set (``rows``: set -> row -> figures), mean, worst set and the
    synthetic strip's large soft unevenness."""
    from ffeval.machine import describe, one_line

    machine = one_line(describe())
    command = " ".join(["python", script, *argv])
    path.write_text(json.dumps({"machine": machine, "command": command, "sets": saved}, indent=1))
    print("machine:", machine)
    strip = [n for n in sets.SETS if sets.suite_set(n, WORK).synthetic][0]
    for h in ("dev", "test"):
        print(h)
        for k in rows[sets.SETS[0]]:
            v = [rows[s][k][h] for s in rows]
            print(f"  {k:60s}", " ".join(f"{x:.3f}" for x in v), f"mean {np.mean(v):.3f} worst {min(v):.3f}",
                  "uneven", rows[strip][k][h + "_uneven"])


def main(argv: list[str]) -> int:
    recipes = argv[0].split(",")
    pairs = [p.split("+") for p in argv[1].split(",")]
    out = {name: run_set(name, recipes, pairs) for name in sets.SETS}
    report(out, out, Path(argv[2]), "benchmarks/accuracy/ensemble.py", argv)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1:]))

"""Pooled or unpooled flows, chosen per line by training's own synthetic check (no retraining).

    python benchmarks/accuracy/pooling_choice.py [--json OUT]

Needs the suite's checkpoints of both candidates on every set (suite.py trains them):
    python benchmarks/accuracy/suite.py --recipe bank-steps4-epochs24 --no-reference \\
        --json benchmarks/results/accuracy-suite-bank-steps4-epochs24-amx.json
    python benchmarks/accuracy/suite.py --recipe pool3-bank-steps4-epochs24 --no-reference

Why: a 3x3 local mean of the features before the flows (``fftrain --feature-pooling 3``) lifts
large soft brightness unevenness (issue 21's set A misses that kind most) and costs ELPV poly and
DeepPCB, so as a global default it lowered the suite's mean and worst set. The memory bank's
weight is already chosen per line by what a trainer can see: the image AUROC of the validation
normals against the same normals with fftrain's hard synthetic defects drawn in. This asks
whether the same check, between the two trained candidates (each with its own bank as fftrain
fits it), picks the better one per set, i.e. whether a trainer that trains both and keeps the
one the check prefers would beat either on the mean and the worst set. Two rules: the higher check
wins, and the candidate wins only by at least fftrain.memory_bank.MAP_MARGIN (the margin the bank's
map must clear: a smaller gain is within what a few dozen validation images tell apart).

The check is recomputed here from each checkpoint exactly as fftrain.train draws it (the
validation images, seed + 1000) and scored with the shipped score (bank included). The DEV /
TEST figures are the candidates' suite rows; choices use only the check (training data), never
a test split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sets  # noqa: E402
import suite  # noqa: E402

WORK = Path("runs/accuracy")
RESULTS = Path(__file__).resolve().parents[1] / "results"
#: (recipe, its suite results file): the unpooled default first (it wins ties), then the candidate.
CANDIDATES = (
    ("bank-steps4-epochs24", RESULTS / "accuracy-suite-bank-steps4-epochs24-amx.json"),
    ("pool3-bank-steps4-epochs24", RESULTS / "accuracy-suite-pool3-bank-steps4-epochs24.json"),
)


def synthetic_check(name: str, recipe: str) -> float:
    """fftrain's check for a trained checkpoint: image AUROC of its validation normals against the
    same normals with the trainer's hard synthetic defects, by the shipped score."""
    from ffcore import synthetic
    from ffcore.data import load_batch
    from fftrain.evaluate import evaluate_features
    from fftrain.memory_bank import separation
    from fftrain.train import extract_features

    split = sets.suite_set(name, WORK).split()
    model, _ = suite.saved_checkpoint(name, recipe, WORK)
    val = load_batch(split.val, model.config.image_size, model.config.resize_mode)
    defects, _, _ = synthetic.hard_defect_batch(val, seed=model.config.seed + 1000)
    with torch.no_grad():
        scores = [evaluate_features(model, extract_features(model, x, progress=False))[2].numpy() for x in (val, defects)]
    return separation(*scores)


def row_of(results: dict, name: str) -> dict:
    return next(r for r in results["rows"] if r["set"] == name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=RESULTS / "accuracy-pooling-choice.json")
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line
    from fftrain.memory_bank import MAP_MARGIN

    machine = describe()
    print(f"machine: {one_line(machine)}", flush=True)
    results = {recipe: json.loads(path.read_text()) for recipe, path in CANDIDATES}
    names = [r["set"] for r in results[CANDIDATES[0][0]]["rows"]]
    default, candidate = (c[0] for c in CANDIDATES)
    checks = {}
    for name in names:
        checks[name] = {recipe: synthetic_check(name, recipe) for recipe, _ in CANDIDATES}
        print(f"{name}: check " + ", ".join(f"{r} {a:.4f}" for r, a in checks[name].items()), flush=True)
    margins = {"chosen by the check": 0.0, f"chosen by the check, margin {MAP_MARGIN:g}": MAP_MARGIN}
    chosen = {label: {n: candidate if checks[n][candidate] > checks[n][default] + margin else default for n in names}
              for label, margin in margins.items()}

    def figure(recipe_of: dict[str, str], half: str, key: str) -> dict[str, float]:
        out = {}
        for name in names:
            value = row_of(results[recipe_of[name]], name)["flows"][half].get(key)
            if value is not None:
                out[name] = value
        return out

    table = {}
    options = {**{recipe: {n: recipe for n in names} for recipe, _ in CANDIDATES}, **chosen}
    for label, recipe_of in options.items():
        entry = {}
        for half in ("dev", "test"):
            for key in ("image_auroc", "pixel_auroc", "recall", "false_reject_rate"):
                vals = figure(recipe_of, half, key)
                entry[f"{half}_{key}"] = {**vals, "mean": float(np.mean(list(vals.values()))),
                                          "worst": float(max(vals.values()) if key == "false_reject_rate"
                                                         else min(vals.values()))}
            entry[f"{half}_uneven"] = row_of(results[recipe_of["synthetic-strip"]], "synthetic-strip")["flows"][half][
                "per_type_auroc"].get("uneven")
        table[label] = entry
    print("DEV / TEST image AUROC per set: " + " / ".join(names))
    for label, entry in table.items():
        d, t = entry["dev_image_auroc"], entry["test_image_auroc"]
        print(f"{label:42s} DEV " + " / ".join(f"{d[n]:.3f}" for n in names)
              + f"  mean/worst {d['mean']:.3f} / {d['worst']:.3f}   TEST {t['mean']:.3f} / {t['worst']:.3f}"
              + f"   pixel DEV {entry['dev_pixel_auroc']['mean']:.3f} / {entry['dev_pixel_auroc']['worst']:.3f}"
              + f"   strip uneven DEV {entry['dev_uneven']:.3f} TEST {entry['test_uneven']:.3f}")
    out = {"schema": "ffrt.accuracy-pooling-choice", "machine": machine,
           "command": ["python", "benchmarks/accuracy/pooling_choice.py", *(argv if argv is not None else sys.argv[1:])],
           "splits": "choices by the synthetic check on validation normals; dev / test = the halves of each test split",
           "sets": names, "candidates": [c[0] for c in CANDIDATES], "margins": margins,
           "synthetic_check": {n: {r: round(a, 4) for r, a in c.items()} for n, c in checks.items()},
           "chosen": chosen, "table": table}
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

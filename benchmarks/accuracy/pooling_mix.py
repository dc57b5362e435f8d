"""Which scales gain from the 3x3 feature pooling: every mix of two trained recipes' decoders.

    python benchmarks/accuracy/pooling_mix.py [--sets ...] [--a default] [--b pool3]

FastFlow's decoders are independent per scale (the backbone is frozen and the loss a sum of
per-scale terms), so a model whose stride-s decoder reads pooled features and whose others do
not is, up to the one kept epoch both recipes choose for all scales, the decoders of recipe
``--b`` at the pooled scales beside recipe ``--a``'s at the others. Each of the 2^3 mixes gets
the head as shipped (scales 4/8/16 in the map, the checkpoint's score strides), fitted on the
training normals (heads.py's "refit head": no re-exposed views) and its threshold by
fftrain's rule on the validation normals, so the all-``a`` and all-``b`` rows are the suite's
"refit head (as shipped)" rows of the two recipes: the like-for-like baselines. One more row,
``ensemble``, reads both decoders at every scale and averages their plain maps (a model with
twice the flows).

Needs both recipes' checkpoints (suite.py --recipe A / B trains them). Writes
``benchmarks/results/accuracy-pooling-mix.json``; prints DEV and TEST image AUROC per set with
the mean and the worst set. Choices are made on DEV only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch

import heads
import sets
import suite


def mixed_raw(raw_a: list[torch.Tensor], raw_b: list[torch.Tensor], from_b: tuple[bool, ...] | None) -> list[torch.Tensor]:
    """Per scale the plain map of ``b`` where ``from_b`` says so, else of ``a``; None: their mean."""
    if from_b is None:
        return [(a + b) / 2 for a, b in zip(raw_a, raw_b)]
    return [b if use_b else a for a, b, use_b in zip(raw_a, raw_b, from_b)]


def run_set(name: str, a: str, b: str, work: Path) -> dict:
    from fftrain import checkpoint
    from fftrain.train import raw_scale_maps

    ss = sets.suite_set(name, work)
    split = ss.split()
    models = {}
    for recipe in (a, b):
        path = work / name / recipe / "model.pt"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: train it first (python benchmarks/accuracy/suite.py --recipe {recipe} "
                             f"--sets {name} --no-reference)")
        models[recipe] = checkpoint.load(path)[0].eval()
    ma, mb = models[a], models[b]
    if ma.config.image_size != mb.config.image_size or ma.config.backbone != mb.config.backbone:
        raise SystemExit(f"{name}: {a} and {b} differ in input size or backbone; their decoders cannot be mixed")
    size, test = ma.config.image_size, split.test
    halves = sets.halves(test)
    masks = suite.quarter_masks(test, size) if any(s.mask_path is not None for s in test) else None
    suite.log(f"== {name}: backbone features")
    feats = suite.split_features(ma, split)
    raw = {r: {k: raw_scale_maps(m, v) for k, v in feats.items()} for r, m in models.items()}
    del feats
    variant = heads.HeadVariant("as shipped", tuple(range(len(raw[a]["train"]))), score_scales=heads.SHIPPED)
    rows = {}
    for from_b in [*itertools.product((False, True), repeat=len(variant.scales)), None]:
        label = "ensemble" if from_b is None else "+".join(str(ma.strides[i]) for i, u in enumerate(from_b) if u) or "none"
        mix = {k: mixed_raw(raw[a][k], raw[b][k], from_b) for k in ("train", "val", "test")}
        rows[label] = suite.variant_row(ma, variant, mix, test, masks, halves)
        suite.log(f"  {b} at strides {label:8s} DEV image AUROC {rows[label]['dev']['image_auroc']:.3f}")
    return {"set": name, "synthetic": ss.synthetic, "image_size": list(size), "mixes": rows}


def table(result: dict, half: str) -> str:
    names = [r["set"] for r in result["rows"]]
    lines = [f"| {result['b']} at strides | " + " | ".join(names) + " | mean | worst |",
             "|---" * (len(names) + 3) + "|"]
    for label in result["rows"][0]["mixes"]:
        vals = [r["mixes"][label][half]["image_auroc"] for r in result["rows"]]
        worst = int(np.argmin(vals))
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in vals)
                     + f" | {np.mean(vals):.3f} | {vals[worst]:.3f} ({names[worst]}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(sets.SETS))
    p.add_argument("--a", default="default", choices=sorted(suite.RECIPES), help="the decoders of unpooled scales")
    p.add_argument("--b", default="pool3", choices=sorted(suite.RECIPES), help="the decoders of pooled scales")
    p.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--json", type=Path, default=suite.RESULTS / "accuracy-pooling-mix.json")
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line

    machine = describe()
    suite.log(f"machine: {one_line(machine)}")
    rows = [run_set(n, args.a, args.b, args.work) for n in args.sets.split(",")]
    result = {"schema": "ffrt.accuracy-pooling-mix", "a": args.a, "b": args.b, "machine": machine,
              "command": ["python", "benchmarks/accuracy/pooling_mix.py", *(argv if argv is not None else sys.argv[1:])],
              "splits": "dev = the half of each test split defaults are chosen on; test = the half reported (sets.py)",
              "rows": rows}
    args.json.write_text(json.dumps(result, indent=1))
    for half in ("dev", "test"):
        print(f"\nimage AUROC, {half.upper()} half (head as shipped, refit on the training normals)\n")
        print(table(result, half))
    suite.log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

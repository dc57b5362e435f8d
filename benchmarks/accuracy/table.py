"""The accuracy suite's tables (markdown) from its result files.

    python benchmarks/accuracy/table.py benchmarks/results/accuracy-suite-all-strides.json [more.json ...] [--half test]

Per result file: one row per set for the flows and the reference scorer (image AUROC, pixel
AUROC, AUPRO, recall and false-reject rate at the threshold, training time), then the mean
over sets and the worst set; then every head variant's image AUROC per set, mean and worst.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def main_table(doc: dict, half: str) -> list[str]:
    rows = doc["rows"]
    from ffeval.machine import one_line

    out = [f"Recipe `{doc['recipe']}`, {half.upper()} half of each test split. Machine: {one_line(doc['machine'])}",
           "", "| set | scorer | image AUROC | pixel AUROC | AUPRO | recall @ thr | false rejects @ thr | training s |",
           "|---|---|---|---|---|---|---|---|"]
    for scorer in ("flows", "flows_val_rule", "flows_folds", "reference"):
        for r in rows:
            if scorer not in r:
                continue
            f = r[scorer][half]
            label = r["set"] + (" (synthetic)" if r["synthetic"] else "")
            out.append(f"| {label} | {scorer} | {_f(f['image_auroc'])} | {_f(f.get('pixel_auroc'))} | {_f(f.get('aupro'))} | "
                       f"{_f(f['recall'], '{:.2f}')} | {_f(f['false_reject_rate'], '{:.1%}')} | "
                       f"{_f(r['train_s'] if scorer == 'flows' else r[scorer].get('fit_s', r[scorer].get('folds_s')), '{:.0f}')} |")
        summ = doc["summary"][half].get(scorer)
        if summ:
            def cell(k, fmt="{:.3f}"):
                s = summ.get(k)
                return "-" if not s else f"{fmt.format(s['mean'])} / {fmt.format(s['worst'])} ({s['worst_set']})"
            out.append(f"| **mean / worst** | {scorer} | {cell('image_auroc')} | {cell('pixel_auroc')} | {cell('aupro')} | "
                       f"{cell('recall', '{:.2f}')} | {cell('false_reject_rate', '{:.1%}')} | |")
    return out


def variants_table(doc: dict, half: str) -> list[str]:
    rows = doc["rows"]
    names = list(rows[0]["head_variants"])
    sets_ = [r["set"] for r in rows]
    out = ["", f"Head variants of the same trained flows, image AUROC, {half.upper()} half:", "",
           "| variant | " + " | ".join(sets_) + " | mean | worst |", "|---" * (len(sets_) + 3) + "|"]
    for label, get in [("flows (shipped head)", lambda r: r["flows"])] + \
                      [(n, (lambda r, n=n: r["head_variants"].get(n))) for n in names] + \
                      [("reference (memory bank)", lambda r: r.get("reference"))]:
        vals = [get(r)[half]["image_auroc"] if get(r) else None for r in rows]
        got = [v for v in vals if v is not None]
        out.append(f"| {label} | " + " | ".join(_f(v) for v in vals) +
                   f" | {_f(float(np.mean(got)) if len(got) == len(vals) else None)} | {_f(min(got) if len(got) == len(vals) else None)} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--half", default="test", choices=("dev", "test"))
    args = p.parse_args(argv)
    for path in args.results:
        doc = json.loads(path.read_text())
        print("\n".join(main_table(doc, args.half) + variants_table(doc, args.half)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

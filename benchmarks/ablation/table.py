"""Markdown table of ablation results (JSON files written by run_ablation.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or ["benchmarks/results/ablation"])[0])
    rows = []
    for f in sorted(folder.glob("*__*.json")):  # run_ablation.py output: VARIANT__DATA.json
        rows += json.loads(f.read_text())
    print("| variant | data | flow params | best epoch | real AUROC | real recall @thr | real FRR @thr | "
          "dev image AUROC | dev pixel AUROC | dev AUPRO | dev recall @thr | exposure-shift FRR |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        real, dev, exp = r["real_test"], r["dev_synthetic"], r["exposure_shift"]
        print(f"| {r['variant']} | {r['data']} | {r['flow_params'] / 1e6:.2f} M | {r['best_epoch']} | "
              f"{fmt(real['image_auroc'])} | {fmt(real['recall'])} | {fmt(real['false_reject_rate'])} | "
              f"{fmt(dev['image_auroc'])} | {fmt(dev['pixel_auroc'])} | {fmt(dev['aupro'])} | {fmt(dev['recall'])} | "
              f"{fmt(exp['false_reject_rate'])} |")
    if rows:
        print(f"\nmachine: {rows[0]['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

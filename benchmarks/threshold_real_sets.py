"""The stored-threshold rules on real models: the old order statistic against the tail model
(``ffcore.operating_point``), both set on the VALIDATION normals fftrain calibrates on, judged
on the TEST split (false rejects of test normals, recall of test defects). Nothing is chosen
here: the rule was chosen on synthetic populations (benchmarks/threshold_holdout.py); this
reports what it does on real scores.

    python benchmarks/threshold_real_sets.py --model runs/x/model.onnx --data elpv:mono [--model ... --data ...]
        [--target 0.02] [--json benchmarks/results/threshold-real-sets.json]

Scores come from the exported file on ONNX Runtime CPU (equal to fftrain's within 1e-5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def scores(detector, samples) -> np.ndarray:
    return np.array([r.score for r in detector.predict_batch([str(s.path) for s in samples], batch_size=8)])


def rates(threshold: float, normal: np.ndarray, defective: np.ndarray) -> dict:
    return {"threshold": threshold, "test_false_reject_rate": float(np.mean(normal > threshold)),
            "test_recall": float(np.mean(defective > threshold)) if defective.size else None}


def one(model: Path, data: str, target: float) -> dict:
    from ffcore.data import resolve
    from ffcore.metrics import threshold_at_frr
    from ffcore.operating_point import operating_point
    from ffrt import Detector

    split = resolve(data)
    det = Detector(model, backend="onnxruntime-cpu")
    val = scores(det, [s for s in split.val if s.label == 0])
    test = scores(det, split.test)
    labels = np.array([s.label for s in split.test])
    normal, defective = test[labels == 0], test[labels == 1]
    new = operating_point(val, target)
    det.close()
    return {"model": str(model), "data": data, "target_frr": target,
            "counts": {"validation_normals": int(val.size), "test_normal": int(normal.size),
                       "test_defective": int(defective.size)},
            "old_order_statistic": rates(threshold_at_frr(val, target), normal, defective),
            "new": {**rates(new.threshold, normal, defective), "method": new.method.value,
                    "frr_interval": [new.frr_low, new.frr_high], "needed_more": new.needed_more,
                    "summary": new.summary()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, type=Path)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--target", type=float, default=0.02)
    ap.add_argument("--json", type=Path, default=Path(__file__).resolve().parent / "results" / "threshold-real-sets.json")
    args = ap.parse_args(argv)
    if len(args.model) != len(args.data):
        ap.error("give one --data per --model")
    from ffeval.machine import describe, one_line, write_rows

    rows = [one(m, d, args.target) for m, d in zip(args.model, args.data)]
    print(f"machine: {one_line(describe())}")
    print("| model | data | val normals | rule | threshold | test FRR | test recall | method / FRR interval |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for rule, v in (("old", r["old_order_statistic"]), ("new", r["new"])):
            recall = "-" if v["test_recall"] is None else f"{v['test_recall']:.3f}"
            extra = f"{v['method']}, [{v['frr_interval'][0]:.3f}, {v['frr_interval'][1]:.3f}]" if rule == "new" else ""
            print(f"| {r['model']} | {r['data']} | {r['counts']['validation_normals']} | {rule} | {v['threshold']:.4f} "
                  f"| {v['test_false_reject_rate']:.3f} | {recall} | {extra} |")
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the default export and the default Detector give on every suite set (issue 27's
accuracy bar for the fast precision: image AUROC within 0.01 of FP32 on the development sets).

    python benchmarks/accuracy/precision.py [--sets ...] [--work runs/accuracy]

Per set: the default recipe's checkpoint (suite.py trains it) is exported as a user exports it,
``ffexport --ckpt model.pt --out export/`` with every default (on a CPU that computes BF16 that
writes the gated ``model.bf16.onnx`` beside ``model.onnx``), then every test image of the set
goes through two Detectors, each at its own file's stored thresholds:

* ``default``: ``Detector("export/model.onnx")``: backend and precision ``auto``, i.e. what a
  user gets (the BF16 variant where it passed its gate and measured fastest);
* ``fp32``: the same file on ONNX Runtime in FP32, the reference.

Figures per half of the test split (sets.py: dev is what a default is judged on, test is only
reported): image AUROC, recall and false rejects at the threshold, and which backend and
precision ``auto`` ran. Writes ``benchmarks/results/accuracy-precision.json`` with the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import sets
import suite

RESULTS = Path(__file__).resolve().parents[1] / "results"
CHUNK = 64  # images read and scored per predict_batch call (memory: all of a call's images at frame size)


def log(msg: str) -> None:
    print(msg, flush=True)


def exported(folder: Path) -> Path:
    """``folder/export/model.onnx`` as a plain ffexport makes it (reused while newer than the checkpoint)."""
    from ffexport.cli import main as ffexport_main

    out = folder / "export"
    onnx = out / "model.onnx"
    if onnx.is_file() and onnx.stat().st_mtime > (folder / "model.pt").stat().st_mtime:
        return onnx
    t0 = time.perf_counter()
    if ffexport_main(["--ckpt", str(folder / "model.pt"), "--out", str(out)]) != 0:
        raise SystemExit(f"ffexport failed for {folder}")
    log(f"  exported in {time.perf_counter() - t0:.0f} s: {sorted(p.name for p in out.glob('*.onnx'))}")
    return onnx


def scored(detector, samples) -> np.ndarray:
    out = []
    for i in range(0, len(samples), CHUNK):
        results = detector.predict_batch([str(s.path) for s in samples[i:i + CHUNK]], batch_size=8)
        out.extend(r.score for r in results)
    return np.asarray(out, np.float64)


def run_set(name: str, work: Path) -> dict:
    from ffrt import Detector

    folder = work / name / "default"
    if not (folder / "model.pt").is_file():
        raise SystemExit(f"{folder / 'model.pt'} is missing: run benchmarks/accuracy/suite.py --sets {name} first")
    log(f"== {name}: export")
    onnx = exported(folder)
    test = sets.suite_set(name, work).split().test
    halves = sets.halves(test)
    row = {"set": name, "synthetic": name in sets.SYNTHETIC_SETS, "files": sorted(p.name for p in onnx.parent.glob("*.onnx")),
           "halves": {h: len(v) for h, v in halves.items()}}
    for label, settings in (("default", {}), ("fp32", {"backend": "onnxruntime-cpu", "precision": "fp32"})):
        log(f"== {name}: {label} Detector on {len(test)} test images")
        with Detector(onnx, **settings) as det:
            t0 = time.perf_counter()
            scores = scored(det, test)
            row[label] = {"backend": det.backend_name, "precision": det.precision, "choice": det.backend_choice,
                          "image_threshold": det.thresholds.image, "seconds": round(time.perf_counter() - t0, 1),
                          **{h: suite.figures(scores, None, det.thresholds.image, test, None, idx)
                             for h, idx in halves.items()}}
        log(f"  {row[label]['backend']} {row[label]['precision']}: dev AUROC {row[label]['dev']['image_auroc']:.4f}, "
            f"test AUROC {row[label]['test']['image_auroc']:.4f}")
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(sets.SETS))
    p.add_argument("--work", type=Path, default=Path("runs/accuracy"))
    args = p.parse_args(argv)
    from ffeval.machine import describe, one_line

    machine = describe()
    log(f"machine: {one_line(machine)}")
    rows = [run_set(n, args.work) for n in args.sets.split(",")]
    summary = {}
    for h in ("dev", "test"):
        diffs = {r["set"]: r["default"][h]["image_auroc"] - r["fp32"][h]["image_auroc"] for r in rows}
        worst = min(diffs, key=diffs.get)
        summary[h] = {"default_minus_fp32_auroc": diffs, "worst": diffs[worst], "worst_set": worst,
                      "mean_default": float(np.mean([r["default"][h]["image_auroc"] for r in rows])),
                      "mean_fp32": float(np.mean([r["fp32"][h]["image_auroc"] for r in rows]))}
    out = {"schema": "ffrt.accuracy-precision", "machine": machine,
           "command": ["python", "benchmarks/accuracy/precision.py", *(argv if argv is not None else sys.argv[1:])],
           "splits": "dev = the half of each test split defaults are judged on; test = the half reported (sets.py)",
           "rows": rows, "summary": summary}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "accuracy-precision.json"
    path.write_text(json.dumps(out, indent=1))
    for h in ("dev", "test"):
        log(f"{h}: default - fp32 image AUROC per set " +
            ", ".join(f"{k} {v:+.4f}" for k, v in summary[h]["default_minus_fp32_auroc"].items()))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

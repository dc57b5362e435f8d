"""ffcalib: calibrate an exported ffrt model (INT8 quantization, decision thresholds).

    ffcalib int8 --model model.onnx --calib elpv:mono [--val SET] [--out DIR] [--force]
    ffcalib thresholds --model model.onnx --normal DIR [--defects DIR [--masks DIR]] [--target-frr 0.01] [--backend auto]

Exit codes: 0 ok, 1 failed (one-line reason on stderr), 3 INT8 accuracy gate failed
(the report is printed; nothing written; --force overrides).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_FAILED = 1
EXIT_GATE = 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffcalib", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser(
        "int8",
        help="write INT8 Q/DQ models (TensorRT and x86-CPU encodings) from one calibration pass",
        description="Calibrate once on normal images and write OUT/model.int8-trt.onnx (symmetric int8, zero point 0, "
        "for TensorRT) and OUT/model.int8-cpu.onnx (uint8 activations / int8 weights, for x86 CPUs with "
        "onnxruntime). Both are checked against FP32 on a validation set (accuracy gate) and the CPU file is "
        "benchmarked against FP32 here.",
    )
    q.add_argument("--model", required=True, type=Path, help="the FP32 model.onnx written by ffexport")
    q.add_argument(
        "--calib",
        required=True,
        help="normal images for calibration: a folder, an MVTec-style root (uses train/good) or elpv:mono / elpv:poly "
        "(the training normals)",
    )
    q.add_argument("--calib-count", type=int, default=64, help="calibration images, spread evenly (default 64; 0 = all)")
    q.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="onnxruntime calibration method for the activation ranges (default minmax)")
    q.add_argument(
        "--val",
        help="accuracy-gate images, named explicitly: elpv:mono/poly (its test split), an MVTec-style root with test/, "
        "or a folder of normal images (rank correlation only). Default: validation data from --calib: every 10th "
        "training normal is held out from calibration, and the gate runs on those normals plus each of them with a "
        "synthetic defect drawn on (ffcore.synthetic). The report says which set was used",
    )
    q.add_argument("--val-count", type=int, default=0,
                   help="gate images (with the default set: held-out normals, each also with a synthetic defect), "
                   "spread evenly (default 0 = all)")
    q.add_argument("--op-types", default="Conv", help="comma-separated node types to quantize (default Conv)")
    q.add_argument("--scope", choices=("backbone", "all"), default="backbone",
                   help="backbone: only nodes upstream of the LayerNorms (the flow head stays float; default); all")
    q.add_argument("--max-auroc-drop", type=float, default=None, help="gate: largest allowed image-AUROC drop (default 0.01)")
    q.add_argument("--min-spearman", type=float, default=None,
                   help="gate: lowest allowed Spearman rank correlation of INT8 vs FP32 scores (default 0.95; 0.90 when "
                   "ffexport --int8 re-fits the heads: see ffcalib/int8.py)")
    q.add_argument("--force", action="store_true", help="write the files even when the accuracy gate fails")
    q.add_argument("--bench-batches", default="1,8", help="batch sizes for the FP32 vs int8-cpu benchmark ('' = skip)")
    q.add_argument("--threads", type=int, default=None, help="CPU threads for scoring and benchmark (default: physical cores)")
    q.add_argument("--out", type=Path, default=None, help="output folder (default: the model's folder)")
    q.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")

    t = sub.add_parser(
        "thresholds",
        help="set the image/pixel thresholds in the model's metadata from real images",
        description="Score images with ffrt.Detector and write thresholds into the model's metadata (atomically). "
        "Without defects: the image threshold rejects at most --target-frr of the normals, and the pixel threshold "
        "at most --target-frr of the normals' maximum map values (no pixel flagged on ~99%% of good parts). With "
        "--defects: F1-optimal image threshold; with --masks too: pixel-F1-optimal pixel threshold.",
    )
    t.add_argument("--model", required=True, type=Path, help="model.onnx to update (any precision)")
    t.add_argument("--normal", required=True, type=Path, help="folder of normal (good) images")
    t.add_argument("--defects", type=Path, default=None, help="folder of defective images (enables F1-optimal thresholds)")
    t.add_argument("--masks", type=Path, default=None,
                   help="folder of defect masks (NAME_mask.png or NAME.png per defect image; white = defect)")
    t.add_argument("--target-frr", type=float, default=0.01, help="false-reject rate on normals (default 0.01)")
    t.add_argument("--histogram", type=Path, default=None,
                   help="PNG of normal/defect scores with the threshold (default: next to the model, with --defects)")
    t.add_argument("--dry-run", action="store_true", help="print the thresholds without writing them")
    t.add_argument(
        "--backend", default="auto",
        help="backend to score with, as in ffrt.Detector: auto (default: what Detector(..., backend='auto') picks on "
        "this machine, i.e. what the line will run), tensorrt, onnxruntime-tensorrt, onnxruntime-cuda or "
        "onnxruntime-cpu. Run this on the line PC: FP16/INT8 scores differ between backends. The backend is recorded "
        "in the metadata (thresholds.calibrated_on)",
    )
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _fail(msg: str, code: int = EXIT_FAILED) -> int:
    print(f"ffcalib: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code


def _int8(args) -> int:
    from ffrt.meta import read_onnx_meta

    from .images import gate_set
    from .int8 import DEFAULT_MAX_AUROC_DROP, AccuracyGateError, quantize_model

    meta = read_onnx_meta(args.model)  # a non-ffrt model fails here, before any image is read
    calib, val_images, val_labels, val_source = gate_set(args.calib, meta.input, args.val, args.val_count,
                                                         progress=not args.no_progress)
    batches = tuple(int(b) for b in args.bench_batches.split(",") if b.strip())
    try:
        report = quantize_model(
            args.model,
            args.out or args.model.parent,
            calib,
            method=args.calib_method,
            count=args.calib_count or None,
            op_types=tuple(s.strip() for s in args.op_types.split(",") if s.strip()),
            scope=args.scope,
            val_images=val_images,
            val_labels=val_labels,
            val_source=val_source,
            max_auroc_drop=DEFAULT_MAX_AUROC_DROP if args.max_auroc_drop is None else args.max_auroc_drop,
            min_spearman=args.min_spearman,
            force=args.force,
            benchmark_batches=batches,
            threads=args.threads,
            progress=not args.no_progress,
        )
    except AccuracyGateError as e:
        print(e.report.summary())
        if args.json:
            args.json.write_text(json.dumps(e.report.to_dict(), indent=1, default=str))
        return _fail(str(e), EXIT_GATE)
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=1, default=str))
    return 0


def _thresholds(args) -> int:
    from .images import list_images
    from .thresholds import calibrate_thresholds

    normals = list_images(args.normal, "--normal")
    defects = list_images(args.defects, "--defects") if args.defects else None
    if args.masks and not defects:
        return _fail("--masks needs --defects (masks belong to defect images)")
    if args.masks and not Path(args.masks).is_dir():
        return _fail(f"--masks {args.masks}: no such folder")
    hist = args.histogram
    if hist is None and defects:
        hist = args.model.with_name(args.model.stem + ".scores.png")
    report = calibrate_thresholds(
        args.model,
        normals,
        defects,
        args.masks,
        target_frr=args.target_frr,
        write=not args.dry_run,
        histogram_png=hist,
        threads=args.threads,
        progress=not args.no_progress,
        backend=args.backend,
    )
    print(report.summary())
    return 0


def main(argv: list[str] | None = None) -> int:
    from ffrt.errors import FFRTError

    from .images import CalibError

    args = build_parser().parse_args(argv)
    try:
        return _int8(args) if args.command == "int8" else _thresholds(args)
    except (CalibError, FFRTError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted; the model file was not changed")


if __name__ == "__main__":
    sys.exit(main())

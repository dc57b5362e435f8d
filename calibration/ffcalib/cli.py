"""ffcalib: calibrate an exported ffrt model (INT8 quantization, decision thresholds).

    ffcalib int8 --model model.onnx --calib elpv:mono [--val SET] [--out DIR] [--force]
    ffcalib thresholds --model model.onnx --normal DIR [--defects DIR [--masks DIR]] [--target-frr 0.01] [--backend auto] [--html PAGE.html]
    ffcalib thresholds --model model.onnx [--image-threshold X] [--pixel-threshold Y] [--thresholds-json FILE]
    ffcalib bf16 --model model.onnx --calib elpv:mono [--val SET] [--keep-fp32 head] [--reference model.onnx]

Exit codes: 0 ok, 1 failed (one-line reason on stderr), 3 INT8 accuracy gate failed
(the report is printed; nothing written; --force overrides) or BF16 gate failed (recorded
as failed in the file's metadata: precision="auto" will not choose BF16).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ffcore.exitcodes import EXIT_FAILED, EXIT_GATE


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
    _gate_set_arguments(q)
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
        "Without defects: the image threshold is set for a false-reject rate of --target-frr on NEW normals, and "
        "the pixel threshold likewise on the normals' maximum map values (no pixel flagged on ~99%% of good parts); "
        "the interval of that rate is printed and stored, with how many more normals the target needs. With "
        "--defects: F1-optimal image threshold; with --masks too: pixel-F1-optimal pixel threshold.",
    )
    t.add_argument("--model", required=True, type=Path, help="model.onnx to update (any precision)")
    t.add_argument("--normal", type=Path, default=None, help="folder of normal (good) images (needed unless the "
                   "thresholds are given by --image-threshold / --pixel-threshold / --thresholds-json)")
    t.add_argument("--defects", type=Path, default=None, help="folder of defective images (enables F1-optimal thresholds)")
    t.add_argument("--masks", type=Path, default=None,
                   help="folder of defect masks (NAME_mask.png or NAME.png per defect image; white = defect)")
    t.add_argument("--target-frr", type=float, default=0.01, help="false-reject rate on new normals, in (0, 1) (default 0.01)")
    t.add_argument("--histogram", type=Path, default=None,
                   help="PNG of normal/defect scores with the threshold (default: next to the model, with --defects)")
    t.add_argument("--dry-run", action="store_true", help="print the thresholds without writing them")
    t.add_argument("--html", type=Path, default=None,
                   help="also write the threshold review page (one self-contained HTML file) of the scored images")
    t.add_argument("--image-threshold", type=float, default=None,
                   help="store this image threshold as it is (e.g. chosen on a review page): no image is scored")
    t.add_argument("--pixel-threshold", type=float, default=None,
                   help="store this pixel threshold as it is: no image is scored")
    t.add_argument("--thresholds-json", type=Path, default=None,
                   help="store the thresholds of this file (the review page's thresholds.json): no image is scored")
    t.add_argument(
        "--backend", default="auto",
        help="backend to score with, as in ffrt.Detector: auto (default: what Detector(..., backend='auto') picks on "
        "this machine, i.e. what the line will run), tensorrt, onnxruntime-tensorrt, onnxruntime-cuda or "
        "onnxruntime-cpu. Run this on the line PC: FP16/INT8 scores differ between backends. The backend is recorded "
        "in the metadata (thresholds.calibrated_on)",
    )
    t.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto",
        help="precision to score in, as in ffrt.Detector (default auto: what the line's Detector picks). Use bf16 "
        "when the line forces Detector(..., precision='bf16'): BF16 scores differ from FP32 ones",
    )
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    b = sub.add_parser(
        "bf16",
        help="check the model in BF16 (OpenVINO, CPU with AMX/AVX512-BF16) against FP32 and record the result in it",
        description="Run the model in BF16 on OpenVINO's CPU plugin (the part named by --keep-fp32 in FP32) and in FP32 "
        "on ONNX Runtime on validation images, and record the gate (score Spearman, image AUROC, map error; the "
        "FP16 gate's bounds, or with --reference the re-fit head's bounds) in the model's metadata, passed or "
        "not. Detector(..., precision='auto') runs BF16 only on a file with a passed gate for its configuration.",
    )
    b.add_argument("--model", required=True, type=Path, help="model.onnx to check and update")
    b.add_argument("--calib", required=True,
                   help="the training data (folder, MVTec root or elpv:mono/poly): every 10th normal is held out and "
                   "gated with a synthetic defect drawn on each, as in ffcalib int8")
    _gate_set_arguments(b)
    b.add_argument("--keep-fp32", choices=("head", "flows", "none"), default="head",
                   help="what runs in FP32: the anomaly head (default, what precision='bf16' runs), the flows and the "
                   "head, or nothing (OpenVINO's own default on AMX CPUs)")
    b.add_argument("--reference", type=Path, default=None,
                   help="the FP32 model a re-fit head came from (ffexport --bf16 does this itself); default: the model")
    b.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _gate_set_arguments(parser) -> None:
    """--val / --val-count: the accuracy gate's images (ffcalib.images.gate_set), for int8 and bf16."""
    parser.add_argument(
        "--val",
        help="accuracy-gate images, named explicitly: elpv:mono/poly (its test split), an MVTec-style root with test/, "
        "or a folder of normal images (rank correlation only). Default: validation data from --calib: every 10th "
        "training normal is held out (from calibration), and the gate runs on those normals plus each of them with a "
        "synthetic defect drawn on (ffcore.synthetic). The report says which set was used",
    )
    parser.add_argument("--val-count", type=int, default=0,
                        help="gate images (with the default set: held-out normals, each also with a synthetic defect), "
                        "spread evenly (default 0 = all)")


def _bf16(args) -> int:
    from ffrt.metafile import read_onnx_meta

    from .bf16 import bf16_gate, record_gate
    from .images import gate_set
    from .int8 import as_images

    meta = read_onnx_meta(args.model)
    _, images, labels, source = gate_set(args.calib, meta.input, args.val, args.val_count, progress=not args.no_progress)
    images = as_images(images, meta, None, not args.no_progress, "gate")
    gate = bf16_gate(args.model, images, labels, source, keep_fp32=args.keep_fp32, reference=args.reference,
                     threads=args.threads)
    record_gate(args.model, gate)
    print(f"BF16 gate: {gate.summary()}\nrecorded in {args.model}")
    if not gate.passed:
        return _fail("the BF16 gate failed (recorded as failed: precision='auto' runs this file in FP32)", EXIT_GATE)
    return 0


def _fail(msg: str, code: int = EXIT_FAILED) -> int:
    print(f"ffcalib: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code


def _int8(args) -> int:
    from ffrt.metafile import read_onnx_meta

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


def _set_thresholds(args) -> int:
    """--image-threshold / --pixel-threshold / --thresholds-json: store the values, score nothing."""
    from .setthresholds import read_thresholds_json, set_thresholds

    scoring = [f for f, v in (("--normal", args.normal), ("--defects", args.defects), ("--masks", args.masks),
                              ("--html", args.html), ("--histogram", args.histogram)) if v is not None]
    if scoring:
        return _fail(f"{', '.join(scoring)} score images, which a threshold given by value does not need; "
                     "give either the values or the images")
    image, pixel, source = args.image_threshold, args.pixel_threshold, "ffcalib --image-threshold/--pixel-threshold"
    if args.thresholds_json is not None:
        if image is not None or pixel is not None:
            return _fail("give --thresholds-json or --image-threshold/--pixel-threshold, not both")
        image, pixel, source = read_thresholds_json(args.thresholds_json)
    old, new = set_thresholds(args.model, image, pixel, source, write=not args.dry_run)
    print(f"thresholds for {args.model}: image {new[0]:.6g} (was {old[0]:.6g}), pixel {new[1]:.6g} (was {old[1]:.6g})"
          + ("\n  (not written)" if args.dry_run else "\n  written into the model's metadata (no images scored)"))
    return 0


def _thresholds(args) -> int:
    from .images import list_images
    from .thresholds import ThresholdsNotWritten

    if args.image_threshold is not None or args.pixel_threshold is not None or args.thresholds_json is not None:
        return _set_thresholds(args)
    if args.normal is None:
        return _fail("--normal DIR is needed to calibrate (or give the thresholds: --image-threshold X)")
    if args.html is not None:
        from ffrt.review import check_page_path

        try:
            check_page_path(args.html)
        except OSError as e:  # its InvalidArgumentError is an FFRTError, answered in main
            return _fail(str(e))
    normals = list_images(args.normal, "--normal")
    defects = list_images(args.defects, "--defects") if args.defects else None
    if args.masks and not defects:
        return _fail("--masks needs --defects (masks belong to defect images)")
    if args.masks and not Path(args.masks).is_dir():
        return _fail(f"--masks {args.masks}: no such folder")
    hist = args.histogram
    if hist is None and defects:
        hist = args.model.with_name(args.model.stem + ".scores.png")
    try:
        report = _calibrate(args, normals, defects, hist)
    except ThresholdsNotWritten as e:
        print(e.report.summary())  # the scoring's result, before the one-line reason on stderr
        raise
    print(report.summary())
    return 0


def _calibrate(args, normals, defects, hist):
    from .thresholds import calibrate_thresholds

    return calibrate_thresholds(
        args.model,
        normals,
        defects,
        args.masks,
        target_frr=args.target_frr,
        write=not args.dry_run,
        histogram_png=hist,
        threads=args.threads,
        progress=not args.no_progress,
        precision=args.precision,
        backend=args.backend,
        html=args.html,
        data=f"{args.normal}" + (f" + {args.defects}" if defects else ""),
    )


def main(argv: list[str] | None = None) -> int:
    from ffrt.errors import FFRTError

    from .images import CalibError

    args = build_parser().parse_args(argv)
    try:
        return {"int8": _int8, "thresholds": _thresholds, "bf16": _bf16}[args.command](args)
    except (CalibError, FFRTError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted; the model file was not changed")


if __name__ == "__main__":
    sys.exit(main())

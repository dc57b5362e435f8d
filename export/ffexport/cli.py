"""ffexport: checkpoint -> fused, self-describing ONNX (+ parity check).

    ffexport --ckpt model.pt --out DIR            -> DIR/model.onnx
    ffexport ... --fp16                           -> + DIR/model.fp16.onnx (mixed precision, checked)
    ffexport ... --int8                           -> + DIR/model.int8-trt.onnx, DIR/model.int8-cpu.onnx (gated)
    ffexport ... --bf16                           -> + DIR/model.bf16.onnx (head re-fit for BF16 CPUs, gated)
    ffexport ... [--fp16] --engine                -> + DIR/model[.fp16].engine (+ .json), GPU host only
    ffexport ... [--fp16] --triton                -> + DIR/triton/ (Triton model repository: ffrt.triton.repository)

All or nothing: the files of one run are published only after every check passed
(staging.py); on any failure the files already in DIR are untouched.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ffcore.exitcodes import EXIT_FAILED, EXIT_GATE, EXIT_INTERRUPTED, EXIT_UNAVAILABLE  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffexport",
        description="Export a trained FastFlow checkpoint to one ONNX file: uint8 NHWC image in, anomaly map and "
        "score out, with the model's metadata (input size, thresholds, ...) embedded. Parity against PyTorch "
        "is checked on real images after every export.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by fftrain (model.pt)")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder; the model is written to OUT/model.onnx once every check has passed (files "
                   "already there are replaced only then)")
    p.add_argument("--batch-max", type=int, default=32, help="largest batch the graph is meant for (default 32)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or newer (default 18)")
    p.add_argument(
        "--parity-images",
        help="folder of images (or elpv:mono / elpv:poly) for the parity check; default: the validation images "
        "recorded in the checkpoint",
    )
    p.add_argument("--parity-count", type=int, default=8, help="images used for the parity check (default 8)")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="also write OUT/model.fp16.onnx: backbone and flows in FP16, the anomaly head (z^2 mean, resize, "
        "fusion, top-k score) in FP32, same uint8 input and float32 outputs. Checked against the FP32 ONNX on "
        "validation images (score rank correlation, image AUROC, map error, verdicts changed); fails beyond tolerance",
    )
    p.add_argument(
        "--fp16-images",
        type=int,
        default=32,
        help="held-out training normals used for the FP16 check, each also with a synthetic defect (default 32 + 32; "
        "validation data of --calib or the checkpoint's training data, as the INT8 and BF16 gates; never the test split)",
    )
    p.add_argument("--int8", action="store_true",
                   help="also write OUT/model.int8-trt.onnx (symmetric, for TensorRT) and OUT/model.int8-cpu.onnx "
                   "(U8S8, for x86 CPUs) from one calibration pass, gated on accuracy against FP32 (see ffcalib int8)")
    p.add_argument("--bf16", action="store_true",
                   help="also write OUT/model.bf16.onnx for CPUs with AMX or AVX512-BF16 (OpenVINO, pip install "
                   "\"ffrt[openvino]\"): the flow head re-fit on the backbone's BF16 features as OpenVINO computes "
                   "them on this CPU, gated against FP32 on validation data (AUROC drop <= 0.01, Spearman >= 0.90), "
                   "the gate recorded in the file: Detector(..., precision='auto') runs it in BF16. With "
                   "--refit-epochs 0: model.onnx itself is gated in BF16 (FP16 bounds) and the gate recorded there")
    p.add_argument("--calib", help="--int8: normal images for calibration; --bf16: the training data (folder, MVTec "
                   "root or elpv:mono/poly); --fp16: the data whose held-out normals check it; default: the training "
                   "data recorded in the checkpoint")
    p.add_argument("--calib-count", type=int, default=64, help="--int8: calibration images (default 64)")
    p.add_argument("--int8-scope", choices=["backbone", "all"], default="backbone",
                   help="--int8: which convolutions get INT8: the backbone's (default) or all, the flows' too. With "
                   "'all' each re-fit graph is calibrated whole (its own flows' ranges) and the same accuracy gate "
                   "decides; INT8 flow convolutions pay on CPUs with AMX-INT8 (OpenVINO), see benchmarks/README.md")
    p.add_argument("--calib-method", choices=["minmax", "entropy", "percentile"], default="minmax",
                   help="--int8: activation range calibration (default minmax)")
    p.add_argument("--refit-epochs", type=int, default=None,
                   help="--int8 / --bf16: epochs of re-fitting each INT8 (BF16) file's flow head on its backbone's features, "
                   "warm-started from the FP32 head (default 6; 0 = plain post-training quantization, which a "
                   "FastFlow head does not survive: see ffexport/int8_head.py)")
    p.add_argument("--min-spearman", type=float, default=None,
                   help="--int8: gate bound on the INT8 vs FP32 score rank correlation (default 0.90 with re-fit heads, "
                   "0.95 without; see ffcalib/int8.py)")
    p.add_argument("--force", action="store_true",
                   help="--int8 / --bf16: write the files even if the accuracy gate fails (a BF16 gate recorded as failed)")
    p.add_argument(
        "--engine",
        action="store_true",
        help="also build a TensorRT engine from the FP16 ONNX (with --fp16) or the FP32 one: OUT/model[.fp16].engine "
        "+ a .json sidecar (TensorRT version, GPU, source graph hash, metadata). Needs TensorRT and an NVIDIA GPU; "
        "without them exits 2 after writing the ONNX and prints the command to run on the GPU host",
    )
    p.add_argument(
        "--triton", action="store_true",
        help="also write a Triton Inference Server model repository to OUT/triton (ffrt_model: the FP16 ONNX with "
        "--fp16, else the FP32 one, on Triton's ONNX Runtime backend; ffrt_detector: ffrt's Python-backend model); "
        "what 'ffrt triton-repo MODEL OUT/triton' writes",
    )
    p.add_argument("--triton-kind", choices=("gpu", "cpu"), default="gpu",
                   help="--triton: where ffrt_model's instances run (default gpu)")
    p.add_argument("--batch-min", type=int, default=1, help="--engine: smallest batch of the optimization profile (default 1)")
    p.add_argument("--batch-opt", type=int, default=None, help="--engine: batch TensorRT tunes for (default min(8, --batch-max))")
    p.add_argument("--workspace", type=int, default=1024, help="--engine: TensorRT builder workspace limit in MB (default 1024)")
    p.add_argument(
        "--timing-cache", type=Path, default=None,
        help="--engine: TensorRT timing cache base name, created or reused across builds; the file is per TensorRT "
        "version and GPU (default OUT/timing.cache -> OUT/timing.trt<version>.sm<cc>.<gpu>.cache)",
    )
    p.add_argument("--device", type=int, default=0, help="--engine: index of the GPU to build on (default 0)")
    return p


def _parity_images(args, payload, size: tuple[int, int]) -> np.ndarray:
    from fftrain.data import DataError, Sample, load_batch, resolve

    if args.parity_images:
        spec = args.parity_images
        folder = Path(spec)
        if folder.is_dir() and not (folder / "train").is_dir():
            from ffcore.files import IMAGE_SUFFIXES

            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            split = resolve(spec)
            paths = [s.path for s in split.val + split.train]
    else:
        paths = [Path(p) for p in payload.get("train_info", {}).get("parity_images", [])]
        if not paths or not all(p.is_file() for p in paths):
            raise DataError(
                "the validation images recorded in the checkpoint are not on this machine; "
                "pass --parity-images DIR (a folder of real images from the same camera)"
            )
    if not paths:
        raise DataError(f"--parity-images {args.parity_images}: no images found")
    return load_batch([Sample(p, 0) for p in paths[: args.parity_count]], size)


def _refuse(why: str) -> int:
    """The staged file failed its check: nothing is published (the stage is removed)."""
    print(f"ffexport: error: {why}; nothing was written, the previous files in the output folder are untouched",
          file=sys.stderr)
    return EXIT_FAILED


def _check_numbers(args) -> str | None:
    """The first numeric flag that cannot work, as a one-line reason (None: all fine)."""
    rules = [
        ("--parity-count", args.parity_count, 1, "images for the parity check"),
        ("--batch-max", args.batch_max, 1, "the largest batch"),
        ("--fp16-images", args.fp16_images, 1, "images per class for the FP16 check"),
        ("--calib-count", args.calib_count, 0, "calibration images (0 = all)"),
        ("--refit-epochs", args.refit_epochs, 0, "re-fit epochs (0 = plain post-training quantization)"),
        ("--batch-min", args.batch_min, 1, "the smallest engine batch"),
        ("--batch-opt", args.batch_opt, 1, "the engine batch TensorRT tunes for"),
        ("--workspace", args.workspace, 0, "the builder workspace in MB"),
        ("--device", args.device, 0, "the GPU index"),
    ]
    for flag, value, low, what in rules:
        if value is not None and value < low:
            return f"{flag} {value}: {what} must be at least {low}"
    if args.opset < 17:
        return f"--opset {args.opset}: opset 17 or newer is required (LayerNormalization)"
    return None


def _int8_step(args, payload, fp32_path: Path, parity_images: np.ndarray) -> int:
    """INT8 of the ONNX just written, through ffcalib's library (the same steps, defaults and gate
    as `ffcalib int8`), with each INT8 file's flow head re-fit on its INT8 backbone (int8_head.py
    explains why): calibrate once, encode each target, re-fit its head, then encode the re-fit
    graph from the same ranges, gate and write."""
    from ffcalib.images import gate_set
    from ffcalib.int8 import DEFAULT_MAX_AUROC_DROP, ENCODINGS, AccuracyGateError, calibrate, quantize_model
    from ffcalib.int8 import as_images, encode  # noqa: E402
    from ffrt.meta import read_onnx_meta
    from fftrain.data import DataError, resolve

    data = payload.get("train_info", {}).get("data")
    calib = args.calib or data
    if not calib:
        print("ffexport: error: --int8 needs --calib DIR (normal images from the line)", file=sys.stderr)
        return EXIT_FAILED
    from .int8_head import DEFAULT_REFIT_EPOCHS, head_refitter

    epochs = DEFAULT_REFIT_EPOCHS if args.refit_epochs is None else args.refit_epochs
    refit = None
    if epochs > 0:
        spec = str(args.calib) if args.calib else data
        try:
            split = resolve(spec)
        except DataError as e:
            print(f"ffexport: error: --int8 re-fits the flow head on the training normals, from {spec}: {e}. "
                  "Pass --calib with the training data (an MVTec-style root or elpv:mono/poly), or "
                  "--refit-epochs 0 for plain post-training quantization", file=sys.stderr)
            return EXIT_FAILED
        refit = head_refitter(args.ckpt, split, parity_images, epochs=epochs, batch_max=args.batch_max,
                              opset=args.opset)
    meta = read_onnx_meta(fp32_path)
    calib_paths, val_images, val_labels, val_source = gate_set(str(calib), meta.input)
    images = as_images(calib_paths, meta, args.calib_count or None, True, "calibration")
    whole = args.int8_scope == "all"
    # Without a re-fit the FP32 graph is what gets quantized: one calibration over the scope.
    cal = calibrate(fp32_path, images, method=args.calib_method, scope="all" if whole and refit is None else "backbone")
    sources = None
    if refit is not None:
        # The flows were fit on FP32 features; INT8 features differ, and the density model reads
        # that as anomaly. Re-fit the flows on the features of each target's very Q/DQ backbone;
        # quantize_model then puts the same Q/DQ (same ranges) on the re-fit graph.
        sources = {t: refit(t, encode(cal, t).SerializeToString()) for t in ENCODINGS}
        if whole:
            # The flows' ranges must be those of the flows that ship: each target's re-fit graph
            # is calibrated whole, on the same images.
            cal = {t: calibrate(sources[t], images, method=args.calib_method, scope="all") for t in ENCODINGS}
    try:
        report = quantize_model(fp32_path, fp32_path.parent, calibration=cal, sources=sources, scope=args.int8_scope,
                                val_images=val_images, val_labels=val_labels, val_source=val_source,
                                max_auroc_drop=DEFAULT_MAX_AUROC_DROP, min_spearman=args.min_spearman,
                                force=args.force)
    except AccuracyGateError as e:
        print(e.report.summary())
        print(f"ffexport: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_GATE
    print(report.summary())
    return 0


def run(args) -> int:
    if sum((args.int8, args.fp16, args.bf16)) > 1:
        print("ffexport: error: choose one of --fp16, --int8 and --bf16 per export (each is checked against FP32)",
              file=sys.stderr)
        return EXIT_FAILED
    bad = _check_numbers(args)
    if bad:
        print(f"ffexport: error: {bad}", file=sys.stderr)
        return EXIT_FAILED

    from fftrain import checkpoint

    from .exporter import export_onnx
    from . import parity
    from .parity import check
    from .staging import Stage

    t0 = time.perf_counter()
    model, payload = checkpoint.load(args.ckpt)
    images = _parity_images(args, payload, model.config.image_size)
    # Every file is written into a stage inside OUT and checked there; only when every check
    # of this run has passed are they renamed to their usable names (staging.py).
    with Stage(args.out) as stage:
        path, meta = export_onnx(model, payload, checkpoint.sha256(args.ckpt), stage.path("model.onnx"),
                                 args.batch_max, args.opset)
        report = check(model, path, images, tolerance_rel=parity.FP32_RTOL)
        print(report)
        if not report.ok:
            return _refuse(report.reason())
        staged = [path.name]
        engine_src, engine_meta = path.name, meta
        if args.fp16:
            code, fp16_path, fp16_meta = _fp16_step(args, model, payload, path, meta)
            if code:
                return code
            staged.append(fp16_path.name)
            engine_src, engine_meta = fp16_path.name, fp16_meta
        if args.int8:
            code = _int8_step(args, payload, path, images)
            if code:
                return code
            from ffcalib.int8 import CPU_NAME, TRT_NAME
            from ffrt.meta import read_onnx_meta

            staged += [TRT_NAME, CPU_NAME]
            engine_src, engine_meta = TRT_NAME, read_onnx_meta(stage.path(TRT_NAME))
        if args.bf16:
            from .bf16_head import bf16_step

            code, gated = bf16_step(args, payload, path, images)
            if code:
                return code
            if gated != path:
                staged.append(gated.name)
        refused = _tensorrt_check(stage, staged)
        if refused:
            return _refuse(refused)
        # The Triton repository is staged and published with the model files: all of this
        # run's files or none (a kill between renames is finished by the next export).
        dirs: tuple[str, ...] = ()
        if args.triton:
            code, dirs = _triton_step(stage, fp16_path.name if args.fp16 else path.name, args.triton_kind)
            if code:
                return code
        written = stage.publish(staged, dirs)
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")
    if args.triton:
        print(f"wrote Triton model repository {args.out / 'triton'} ({', '.join(Path(d).name for d in dirs)}); "
              f"serve it: tritonserver --model-repository={(args.out / 'triton').resolve()}")
    print(
        f"{meta.backbone.name}, input {meta.input.height}x{meta.input.width}, batch 1..{meta.batch_max}, "
        f"opset {meta.opset}: every check passed in {time.perf_counter() - t0:.1f} s"
    )
    if args.engine:
        from .tensorrt import run_engine_step

        return run_engine_step(args.out / engine_src, engine_meta, args.batch_min, args.batch_opt, args.batch_max,
                               args.workspace, args.timing_cache, device=args.device)
    return 0


def _tensorrt_check(stage, staged: list[str]) -> str | None:
    """Every staged file meant for TensorRT must build on the line PC's TensorRT 10 (ffrt.tensorrt.compat):
    refused here, not discovered there. The CPU INT8 encoding is for ONNX Runtime / OpenVINO only
    (uint8 activations with zero points), so its findings are reported, not refused."""
    from ffcalib.int8 import CPU_NAME
    from ffrt.tensorrt import compat

    passed = []
    for name in staged:
        found = compat.problems(stage.path(name))
        if found and name == CPU_NAME:
            print(f"TensorRT 10 check: {name} is for CPUs only; TensorRT would refuse it ({len(found)} findings, "
                  f"first: {found[0]}); use model.int8-trt.onnx for TensorRT")
        elif found:
            return compat.refusal(name, found)
        else:
            passed.append(name)
    if passed:
        print(f"TensorRT 10 check (operators, types, uint8 only into Cast, TopK K, dynamic dims): "
              f"{', '.join(passed)} OK")
    return None


def _triton_step(stage, model_name: str, kind: str) -> tuple[int, tuple[str, ...]]:
    """Write the Triton repository of the staged model into the stage; returns (exit code,
    the repository's model folders as paths relative to OUT, for Stage.publish)."""
    from ffrt.errors import FFRTError
    from ffrt.triton.repository import Options, write_repository

    try:
        write_repository(stage.path(model_name), stage.path("triton"), Options(kind=kind))
    except FFRTError as e:
        print(f"ffexport: error: the Triton repository was not written (nor the model files): {e}", file=sys.stderr)
        return EXIT_FAILED, ()
    return 0, tuple(f"triton/{d.name}" for d in sorted(stage.path("triton").iterdir()) if d.is_dir())


def _fp16_images(args, payload, spec):
    """(images, labels, what they are) for the FP16 gate: validation data as the INT8 and BF16
    gates use it (``--fp16-images`` held-out training normals of ``--calib`` or the checkpoint's
    training data, each also with a synthetic defect; never the test split), or, without a
    dataset on this machine, the parity images without labels."""
    from ffcalib.images import CalibError, gate_set
    from fftrain.data import DataError

    data = args.calib or payload.get("train_info", {}).get("data")
    if data:
        try:
            _, images, labels, what = gate_set(str(data), spec, val_count=args.fp16_images, progress=False)
            return np.asarray(images), np.asarray(labels), what
        except (CalibError, DataError, OSError) as e:
            print(f"ffexport: the FP16 check has no labelled validation data ({e}); it compares the parity images "
                  "(score ranking and maps, no AUROC)", file=sys.stderr)
    return _parity_images(args, payload, (spec.height, spec.width)), None, "the parity images"


def _fp16_step(args, model, payload, fp32_path: Path, fp32_meta):
    """Trace model.fp16.onnx next to the staged FP32 file and gate it against that file;
    returns (exit code, path, meta)."""
    import tempfile

    from .fp16_gate import compare
    from .precision import FP16_SUFFIX, export_fp16

    t0 = time.perf_counter()
    images, labels, what = _fp16_images(args, payload, fp32_meta.input)
    fp16_path, fp16_meta = export_fp16(model, payload, fp32_meta.source_checkpoint_sha256,
                                       fp32_path.with_name("model" + FP16_SUFFIX),
                                       args.batch_max, args.opset)
    with tempfile.TemporaryDirectory() as tmp:
        report = compare(fp32_path, fp16_path, images, labels, Path(tmp), data=what)
    print(report)
    if not report.ok:
        return _refuse("the FP16 graph disagrees with FP32 beyond tolerance"), None, None
    print(f"FP16 graph traced and checked in {time.perf_counter() - t0:.1f} s")
    return 0, fp16_path, fp16_meta


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ffexport.exporter import ExportError
    from fftrain.checkpoint import CheckpointError
    from fftrain.data import DataError

    from ffcalib.images import CalibError
    from ffrt.errors import FFRTError

    try:
        return run(args)
    except (CalibError, CheckpointError, DataError, ExportError, FFRTError, OSError) as e:
        print(f"ffexport: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("ffexport: error: interrupted; nothing was written, the previous files are untouched", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

"""ffexport: checkpoint -> fused, self-describing ONNX (+ parity check).

    ffexport --ckpt model.pt --out DIR            -> DIR/model.onnx
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

EXIT_FAILED = 1
EXIT_UNAVAILABLE = 2  # the requested feature cannot run here / is not in this release


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffexport",
        description="Export a trained FastFlow checkpoint to one ONNX file: uint8 NHWC image in, anomaly map and "
        "score out, with the model's metadata (input size, thresholds, ...) embedded. Parity against PyTorch "
        "is checked on real images after every export.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by fftrain (model.pt)")
    p.add_argument("--out", required=True, type=Path, help="output folder; the model is written to OUT/model.onnx")
    p.add_argument("--batch-max", type=int, default=32, help="largest batch the graph is meant for (default 32)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset, 17 or newer (default 18)")
    p.add_argument(
        "--parity-images",
        help="folder of images (or elpv:mono / elpv:poly) for the parity check; default: the validation images "
        "recorded in the checkpoint",
    )
    p.add_argument("--parity-count", type=int, default=8, help="images used for the parity check (default 8)")
    p.add_argument("--fp16", action="store_true", help="also write a mixed-precision FP16 ONNX (not in this release)")
    p.add_argument("--int8", action="store_true", help="also write INT8 Q/DQ ONNX files (not in this release)")
    p.add_argument("--engine", action="store_true", help="also build a TensorRT engine (not in this release)")
    return p


def _parity_images(args, payload, size: int) -> np.ndarray:
    from fftrain.data import DataError, Sample, load_batch, resolve

    if args.parity_images:
        spec = args.parity_images
        folder = Path(spec)
        if folder.is_dir() and not (folder / "train").is_dir():
            from fftrain.data import IMAGE_SUFFIXES

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


def run(args) -> int:
    if args.fp16 or args.int8:
        flag = "--fp16" if args.fp16 else "--int8"
        print(f"ffexport: error: {flag} is not available in this release; export without it (FP32 runs everywhere)",
              file=sys.stderr)
        return EXIT_UNAVAILABLE

    from fftrain import checkpoint

    from .exporter import export_onnx
    from .parity import check

    t0 = time.perf_counter()
    model, payload = checkpoint.load(args.ckpt)
    images = _parity_images(args, payload, model.config.image_size)
    out = args.out / "model.onnx"
    path, meta = export_onnx(model, payload, checkpoint.sha256(args.ckpt), out, args.batch_max, args.opset)
    report = check(model, path, images)
    print(report)
    if not report.ok:
        bad = path.with_name(path.name + ".parity-failed")
        path.replace(bad)
        print(f"ffexport: error: exported graph disagrees with PyTorch beyond tolerance; kept for inspection as {bad}",
              file=sys.stderr)
        return EXIT_FAILED
    size_mb = path.stat().st_size / 1e6
    print(
        f"wrote {path} ({size_mb:.1f} MB, {meta.backbone.name}, input {meta.input.height}x{meta.input.width}, "
        f"batch 1..{meta.batch_max}, opset {meta.opset}) in {time.perf_counter() - t0:.1f} s"
    )
    if args.engine:
        print(
            "ffexport: error: TensorRT engine building is not in this release; the ONNX above is complete. "
            f"On the GPU host: trtexec --onnx={path} --minShapes=image:1x{meta.input.height}x{meta.input.width}x3 "
            f"--maxShapes=image:{meta.batch_max}x{meta.input.height}x{meta.input.width}x3 --saveEngine=model.engine",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ffexport.exporter import ExportError
    from fftrain.checkpoint import CheckpointError
    from fftrain.data import DataError

    try:
        return run(args)
    except (CheckpointError, DataError, ExportError, OSError) as e:
        print(f"ffexport: error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""ffexport: checkpoint -> fused, self-describing ONNX (+ parity check).

    ffexport --ckpt model.pt --out DIR            -> DIR/model.onnx
    ffexport ... --fp16                           -> + DIR/model.fp16.onnx (mixed precision, checked)
    ffexport ... --int8                           -> + DIR/model.int8-trt.onnx, DIR/model.int8-cpu.onnx (gated)
    ffexport ... [--bf16]                         -> + DIR/model.bf16.onnx (head re-fit for BF16 CPUs, gated;
                                                     made by default where this CPU can, --no-bf16: never)
    ffexport ... [--fp16] --engine                -> + DIR/model[.fp16].engine (+ .json), GPU host only
    ffexport ... [--fp16] --triton                -> + DIR/triton/ (Triton model repository: ffrt.triton.repository)

All or nothing: the files of one run are published only after every check passed
(staging.py); on any failure the files already in DIR are untouched.

This file only parses: argv -> ExportRequest (request.py) -> ffexport.export (orchestrate.py)
-> the report's status as the exit code (report.EXIT_CODES). Options left out are left out of
the request too, so every default is the request's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from ffcore.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED

from .report import EXIT_CODES
from .request import CalibMethod, ExportRequest, Int8Scope, TritonKind, choices, refusal

#: The request's defaults, for the help texts.
DEFAULT = {name: f.default for name, f in ExportRequest.model_fields.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ffexport",
        argument_default=argparse.SUPPRESS,
        description="Export a trained FastFlow checkpoint to one ONNX file: uint8 NHWC image in, anomaly map and "
        "score out, with the model's metadata (input size, thresholds, ...) embedded. Parity against PyTorch "
        "is checked on real images after every export.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by fftrain (model.pt)")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder; the model is written to OUT/model.onnx once every check has passed (files "
                   "already there are replaced only then)")
    p.add_argument("--batch-max", type=int, help=f"largest batch the graph is meant for (default {DEFAULT['batch_max']})")
    p.add_argument("--opset", type=int, help=f"ONNX opset, 17 or newer (default {DEFAULT['opset']})")
    p.add_argument(
        "--parity-images",
        help="folder of images (or elpv:mono / elpv:poly) for the parity check; default: the validation images "
        "recorded in the checkpoint",
    )
    p.add_argument("--parity-count", type=int,
                   help=f"images used for the parity check (default {DEFAULT['parity_count']})")
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
        help=f"held-out training normals used for the FP16 check, each also with a synthetic defect (default "
        f"{DEFAULT['fp16_images']} + {DEFAULT['fp16_images']}; "
        "validation data of --calib or the checkpoint's training data, as the INT8 and BF16 gates; never the test split)",
    )
    p.add_argument("--int8", action="store_true",
                   help="also write OUT/model.int8-trt.onnx (symmetric, for TensorRT) and OUT/model.int8-cpu.onnx "
                   "(U8S8, for x86 CPUs) from one calibration pass, gated on accuracy against FP32 (see ffcalib int8)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="OUT/model.bf16.onnx for CPUs with AMX or AVX512-BF16 (OpenVINO, pip install "
                   "\"ffrt[openvino]\"): the flow head re-fit on the backbone's BF16 features as OpenVINO computes "
                   "them on this CPU, gated against FP32 on validation data (AUROC drop <= 0.01, Spearman >= 0.90), "
                   "the gate recorded in the file: Detector(\"model.onnx\") runs it in BF16 where it is faster. "
                   "Default: made where this machine can make it and it passes its gate, else one line says why "
                   "not; --bf16: refuse the export instead; --no-bf16: never. With --refit-epochs 0: model.onnx "
                   "itself is gated in BF16 (FP16 bounds) and the gate recorded there")
    p.add_argument("--calib", help="--int8: normal images for calibration; --bf16: the training data (folder, MVTec "
                   "root or elpv:mono/poly); --fp16: the data whose held-out normals check it; default: the training "
                   "data recorded in the checkpoint")
    p.add_argument("--calib-count", type=int, help=f"--int8: calibration images (default {DEFAULT['calib_count']})")
    p.add_argument("--int8-scope", choices=choices(Int8Scope),
                   help="--int8: which convolutions get INT8: the backbone's (default) or all, the flows' too. With "
                   "'all' each re-fit graph is calibrated whole (its own flows' ranges) and the same accuracy gate "
                   "decides; INT8 flow convolutions pay on CPUs with AMX-INT8 (OpenVINO), see benchmarks/README.md")
    p.add_argument("--calib-method", choices=choices(CalibMethod),
                   help=f"--int8: activation range calibration (default {DEFAULT['calib_method']})")
    p.add_argument("--refit-epochs", type=int,
                   help="--int8 / --bf16: epochs of re-fitting each INT8 (BF16) file's flow head on its backbone's features, "
                   "warm-started from the FP32 head (default 6; 0 = plain post-training quantization, which a "
                   "FastFlow head does not survive: see ffexport/int8_head.py)")
    p.add_argument("--min-spearman", type=float,
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
    p.add_argument("--triton-kind", choices=choices(TritonKind),
                   help=f"--triton: where ffrt_model's instances run (default {DEFAULT['triton_kind']})")
    p.add_argument("--batch-min", type=int,
                   help=f"--engine: smallest batch of the optimization profile (default {DEFAULT['batch_min']})")
    p.add_argument("--batch-opt", type=int, help="--engine: batch TensorRT tunes for (default min(8, --batch-max))")
    p.add_argument("--workspace", type=int,
                   help=f"--engine: TensorRT builder workspace limit in MB (default {DEFAULT['workspace']})")
    p.add_argument(
        "--timing-cache", type=Path,
        help="--engine: TensorRT timing cache base name, created or reused across builds; the file is per TensorRT "
        "version and GPU (default OUT/timing.cache -> OUT/timing.trt<version>.sm<cc>.<gpu>.cache)",
    )
    p.add_argument("--device", type=int, help=f"--engine: index of the GPU to build on (default {DEFAULT['device']})")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        request = ExportRequest(**vars(build_parser().parse_args(argv)))
    except ValidationError as e:
        print(f"ffexport: error: {refusal(e)}", file=sys.stderr)
        return EXIT_FAILED
    from .orchestrate import export

    try:
        report = export(request)
    except KeyboardInterrupt:
        print("ffexport: error: interrupted; nothing was written, the previous files are untouched", file=sys.stderr)
        return EXIT_INTERRUPTED
    if report.reason:
        print(f"ffexport: error: {report.reason}", file=sys.stderr)
    return EXIT_CODES[report.status]


if __name__ == "__main__":
    sys.exit(main())

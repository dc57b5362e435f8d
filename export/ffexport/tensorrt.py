"""``ffexport --engine``: compile the chosen ONNX into a TensorRT plan on this machine.

The ONNX already decides every precision ("Precision is decided in the ONNX, TensorRT
only compiles it", docs/design.md), so this step only: parses it into a strongly typed
network (full parser errors printed), adds one optimization profile for the batch range,
reuses a timing cache file across builds, ``build_serialized_network``, and writes the
plan atomically with its metadata sidecar (TensorRT version, GPU name and compute
capability, hash of the source ONNX's graph and its path, sha256 of the plan, batch
profile, ModelMeta). Keep the ONNX next to the engine: the Detector reads the thresholds
from it (re-tuned with ffcalib thresholds, no rebuild; see ffrt.tensorrt.build.engine_meta).

The TensorRT calls live in :func:`ffrt.tensorrt.build.build_plan`, because the runtime's engine
cache (``Detector("model.onnx", backend="tensorrt")``) builds the same plans and ffrt may
not import ffexport (imports point one way). This module is the exporter's front end,
and also a torch-free command for the GPU host::

    python -m ffexport.tensorrt DIR/model.fp16.onnx [--out DIR/model.fp16.engine]
        [--batch-min 1 --batch-opt 8 --batch-max 32] [--workspace MB] [--timing-cache FILE]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ffrt.tensorrt.build import DEFAULT_WORKSPACE_MB, EngineBuildError, build_plan, missing_for_tensorrt

from ffrt.tensorrt.plan import BatchProfile, EngineInfo, sidecar_path, write_engine
from ffrt.errors import BackendUnavailableError, FFRTError
from ffrt.meta import ModelMeta
from ffrt.metafile import read_onnx_meta

from ffcore.exitcodes import EXIT_FAILED

from .report import EXIT_CODES, ExportStatus
from .request import ExportRequest
from .step import Made, MadeFile, StepOutcome, refused


def engine_path_for(onnx_path: Path) -> Path:
    """DIR/model.onnx -> DIR/model.engine; DIR/model.fp16.onnx -> DIR/model.fp16.engine."""
    return onnx_path.with_name(onnx_path.name[: -len(".onnx")] + ".engine")


def default_timing_cache(onnx_path: Path) -> Path:
    return onnx_path.parent / "timing.cache"


def target_command(onnx_path: Path, profile: BatchProfile, workspace_mb: int | None, timing_cache: Path | None,
                   device: int = 0) -> str:
    """The exact command that builds this engine on the GPU host (torch-free)."""
    parts = [
        "python", "-m", "ffexport.tensorrt", str(onnx_path.resolve()),
        "--batch-min", str(profile.min), "--batch-opt", str(profile.opt), "--batch-max", str(profile.max),
    ]
    if workspace_mb:
        parts += ["--workspace", str(workspace_mb)]
    if timing_cache:
        parts += ["--timing-cache", str(Path(timing_cache).resolve())]
    if device:
        parts += ["--device", str(device)]
    return " ".join(shlex.quote(p) for p in parts)


def unavailable_reason(onnx_path: Path, profile: BatchProfile, workspace_mb: int | None, timing_cache: Path | None,
                       missing: str, device: int = 0) -> str:
    missing = " ".join(str(missing).split())
    return (
        f"cannot build the TensorRT engine here: {missing}; the ONNX files are written. "
        f"On the GPU host run: {target_command(onnx_path, profile, workspace_mb, timing_cache, device)}"
    )


def build_engine(onnx_path: str | Path, profile: BatchProfile, workspace_mb: int | None = DEFAULT_WORKSPACE_MB,
                 timing_cache: str | Path | None = None, out: str | Path | None = None,
                 meta: ModelMeta | None = None, log=print, device: int = 0) -> tuple[Path, EngineInfo]:
    """Build and write the plan + sidecar. Raises BackendUnavailableError without TensorRT/GPU,
    EngineBuildError (a subclass) when TensorRT cannot build this graph."""
    onnx_path = Path(onnx_path)
    meta = meta or read_onnx_meta(onnx_path)
    out = Path(out) if out else engine_path_for(onnx_path)
    plan, info = build_plan(onnx_path, meta, profile, workspace_mb, timing_cache, log=log, device=device)
    write_engine(out, plan, info)
    return out, info


def engine_outcome(onnx_path: Path, meta: ModelMeta, batch_min: int | None, batch_opt: int | None,
                   batch_max: int | None, workspace_mb: int | None, timing_cache: Path | None,
                   out: Path | None = None, device: int = 0) -> StepOutcome:
    """Build the engine of ``onnx_path`` here, or say why not: a bad profile or a graph TensorRT
    cannot build is FAILED, no TensorRT / GPU here is UNAVAILABLE (with the GPU host's command)."""
    try:
        profile = BatchProfile.for_model(meta, batch_min, batch_opt, batch_max)
    except FFRTError as e:
        return refused(str(e))
    timing_cache = timing_cache or default_timing_cache(onnx_path)
    missing = missing_for_tensorrt(device)
    if missing is not None:
        return refused(unavailable_reason(onnx_path, profile, workspace_mb, timing_cache, missing, device),
                       ExportStatus.UNAVAILABLE)
    t0 = time.perf_counter()
    try:
        path, info = build_engine(onnx_path, profile, workspace_mb, timing_cache, out, meta, device=device)
    except EngineBuildError as e:  # this graph does not build: parser errors (printed in full), TopK, ...
        return refused(str(e))
    except BackendUnavailableError as e:  # TensorRT/CUDA cannot start here (driver, GPU): one line
        return refused(unavailable_reason(onnx_path, profile, workspace_mb, timing_cache, str(e), device),
                       ExportStatus.UNAVAILABLE)
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, TensorRT {info.tensorrt_version}, {info.gpu_name} "
        f"sm{info.compute_capability}, {info.precision}, batch {profile.min}..{profile.max} opt {profile.opt}) "
        f"+ {sidecar_path(path).name} in {time.perf_counter() - t0:.1f} s"
    )
    return StepOutcome(files=(MadeFile(path.name, "tensorrt", meta), MadeFile(sidecar_path(path).name, "tensorrt", None)))


def engine_step(request: ExportRequest, made: Made) -> StepOutcome:
    """The ``engine`` variant: from the published file the engine is built from (FP16 or INT8
    for TensorRT when made, else FP32), into the output folder."""
    return engine_outcome(made.path(made.engine_source), made.file(made.engine_source).meta, request.batch_min,
                          request.batch_opt, request.batch_max, request.workspace, request.timing_cache,
                          device=request.device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ffexport.tensorrt",
        description="Build a TensorRT engine (strongly typed; precision as written in the ONNX) from an ffrt ONNX "
        "on this GPU host, with its metadata sidecar. Needs no PyTorch.",
    )
    p.add_argument("onnx", type=Path, help="model.onnx / model.fp16.onnx / INT8 Q/DQ ONNX written by ffexport")
    p.add_argument("--out", type=Path, help="engine path (default: next to the ONNX, .onnx -> .engine)")
    p.add_argument("--batch-min", type=int, help="smallest batch the engine accepts (default 1)")
    p.add_argument("--batch-opt", type=int, help="batch TensorRT tunes for (default min(8, batch-max))")
    p.add_argument("--batch-max", type=int, help="largest batch (default: the ONNX's batch_max)")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MB, help="builder workspace limit in MB (default 1024)")
    p.add_argument("--timing-cache", type=Path, help="timing cache base name, reused across builds; the file is per "
                   "TensorRT version and GPU, e.g. DIR/timing.trt10.16.1.11.sm86.<gpu>.cache (default: DIR/timing.cache)")
    p.add_argument("--device", type=int, default=0, help="index of the GPU to build for (default 0)")
    args = p.parse_args(argv)
    try:
        meta = read_onnx_meta(args.onnx)
    except FFRTError as e:
        print(f"ffexport: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    outcome = engine_outcome(args.onnx, meta, args.batch_min, args.batch_opt, args.batch_max, args.workspace,
                             args.timing_cache, args.out, device=args.device)
    if outcome.reason:
        print(f"ffexport: error: {outcome.reason}", file=sys.stderr)
    return EXIT_CODES[outcome.status]


if __name__ == "__main__":
    sys.exit(main())

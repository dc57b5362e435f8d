"""``ffexport.export(request) -> ExportReport``: the variants a request asks for, all or nothing.

Load the checkpoint and the parity images; then, in a stage inside the output folder
(staging.py), run the FILE rows of variants.py, check every staged file against TensorRT 10,
run the PACKAGE rows, and publish only when every check has passed; then the AFTER_PUBLISH
rows (the engine, which needs the published files). The first row that does not succeed ends
the run. Every row's step runs through one wrapper (:func:`_run`): timed, and the failures a
user can cause (a broken checkpoint, missing data, ...) turned into that row's refusal;
anything else is a bug and propagates (the stage is removed on the way out).

Progress goes to stdout as lines, as the steps print it; the refusal is the report's
``reason``, which the CLI prints.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .fp32_step import FP32_NAME, parity_images
from .report import ExportReport, ExportStatus, VariantOutcome, WrittenFile
from .request import ExportRequest
from .staging import Stage
from .step import NOTHING_WRITTEN, Made, StepOutcome, refused
from .triton_step import FOLDER as TRITON_FOLDER
from .variants import Phase, Variant, asked


def expected_errors() -> tuple[type[Exception], ...]:
    """What bad input raises (each says what to do): a refusal of the run, not a crash."""
    from ffcalib.images import CalibError
    from ffcore.memory import NotEnoughMemoryError
    from ffrt.errors import FFRTError
    from fftrain.checkpoint import CheckpointError
    from fftrain.data import DataError

    from .exporter import ExportError

    return CalibError, CheckpointError, DataError, ExportError, FFRTError, NotEnoughMemoryError, OSError


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def export(request: ExportRequest) -> ExportReport:
    """Export ``request.ckpt`` into ``request.out`` as the request says; see ExportReport."""
    t0 = time.perf_counter()
    outcomes: list[VariantOutcome] = []
    try:
        made, stop = _export(request, outcomes)
    except expected_errors() as e:
        made, stop = None, refused(one_line(e))
    files = () if made is None or not made.published else _written(request, made)
    return ExportReport(status=stop.status, reason=stop.reason, files=files,
                        folders=tuple(request.out / d for d in made.folders) if files else (),
                        variants=tuple(outcomes), seconds=time.perf_counter() - t0)


def _export(request: ExportRequest, outcomes: list[VariantOutcome]) -> tuple[Made, StepOutcome]:
    """(what was made, the outcome that ended the run: the first refusal, else OK)."""
    from fftrain import checkpoint

    t0 = time.perf_counter()
    model, payload = checkpoint.load(request.ckpt)
    images = parity_images(request, payload, model.config.image_size)
    # Every file is written into a stage inside OUT and checked there; only when every check
    # of this run has passed are they renamed to their usable names (staging.py).
    with Stage(request.out) as stage:
        made = Made(model, payload, images, stage)
        made, stop = _run_phase(request, made, Phase.FILE, outcomes)
        if stop is not None:
            return made, stop
        problem = _tensorrt_check(made)
        if problem is not None:
            return made, refused(problem + NOTHING_WRITTEN)
        made, stop = _run_phase(request, made, Phase.PACKAGE, outcomes)
        if stop is not None:
            return made, stop
        written = stage.publish([f.name for f in made.files], made.folders)
    made = replace(made, published=True)
    _say_published(request, made, written, time.perf_counter() - t0)
    made, stop = _run_phase(request, made, Phase.AFTER_PUBLISH, outcomes)
    return made, stop or StepOutcome()


def _run_phase(request: ExportRequest, made: Made, phase: Phase,
               outcomes: list[VariantOutcome]) -> tuple[Made, StepOutcome | None]:
    for variant in asked(request, phase):
        outcome, seconds = _run(variant, request, made)
        outcomes.append(VariantOutcome(variant=variant.name, status=outcome.status,
                                       files=tuple(f.name for f in outcome.files), reason=outcome.reason,
                                       seconds=seconds))
        if outcome.status is ExportStatus.SKIPPED:
            print(f"{variant.name}: not made: {outcome.reason}")
            continue
        if outcome.status is not ExportStatus.OK:
            return made, outcome
        made = made.plus(outcome)
    return made, None


def _run(variant: Variant, request: ExportRequest, made: Made) -> tuple[StepOutcome, float]:
    """The one wrapper every step runs in: (its outcome, its seconds)."""
    t0 = time.perf_counter()
    try:
        outcome = variant.step(request, made)
    except expected_errors() as e:
        outcome = refused(one_line(e))
    return outcome, time.perf_counter() - t0


def _tensorrt_check(made: Made) -> str | None:
    """Every staged file meant for TensorRT must build on the line PC's TensorRT 10 (ffrt.tensorrt.compat):
    refused here, not discovered there. The CPU INT8 encoding is for ONNX Runtime / OpenVINO only
    (uint8 activations with zero points), so its findings are reported, not refused."""
    from ffcalib.int8 import CPU_NAME
    from ffrt.tensorrt import compat

    passed = []
    for name in (f.name for f in made.files):
        found = compat.problems(made.path(name))
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


def _say_published(request: ExportRequest, made: Made, written, seconds: float) -> None:
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 1e6:.1f} MB)")
    if made.folders:
        root = request.out / TRITON_FOLDER
        print(f"wrote Triton model repository {root} ({', '.join(d.split('/')[-1] for d in made.folders)}); "
              f"serve it: tritonserver --model-repository={root.resolve()}")
    meta = made.file(FP32_NAME).meta
    print(f"{meta.backbone.name}, input {meta.input.height}x{meta.input.width}, batch 1..{meta.batch_max}, "
          f"opset {meta.opset}: every check passed in {seconds:.1f} s")


def _written(request: ExportRequest, made: Made) -> tuple[WrittenFile, ...]:
    return tuple(
        WrittenFile(path=request.out / f.name, variant=f.variant, precision=f.meta.precision if f.meta else None,
                    size_bytes=(request.out / f.name).stat().st_size, gates=f.gates)
        for f in made.files
    )

"""``ffexport --bf16``: a model whose flow head is fit on the features its BF16 backbone computes.

Made by default (``ExportRequest.bf16`` None) where the export's machine can make and gate it;
there, anything in the way only skips it with one line, and the FP32 file is published alone.

Why a re-fit: run in BF16 (OpenVINO's CPU plugin, AMX), the FP32 model's ranking of parts
moves far more than FP16's does, and keeping the head or even the flows in FP32 does not
help: the backbone's BF16 feature maps are what the flows read as "unlike a normal part"
(benchmarks/README.md, "OpenVINO, BF16 and INT8 on an AMX CPU"). It is the INT8 situation
with smaller errors, and the same remedy (int8_head.py): the backbone is frozen, so the
training normals are run through the BF16 backbone as OpenVINO computes it on this CPU and
the flows are trained on those features from the FP32 head, with the trainer's own loop,
epoch selection and threshold calibration.

The file is an FP32 graph like model.onnx (only the head's weights differ): every backend
runs it; in BF16, ``Detector(..., precision="auto")`` runs it that way because the BF16
gate (ffcalib.bf16, against the FP32 model.onnx, on validation data) passed and is recorded
in its metadata. The features come from the CPU that runs the export: export on a CPU with
native BF16 (AMX or AVX512-BF16) of the kind the line PCs have.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fftrain.train import FeatureExtractor

from .fp32_step import FP32_NAME
from .int8_head import features_of
from .report import ExportStatus, GateVerdict
from .request import ExportRequest
from .step import Made, MadeFile, StepOutcome, refused

BF16_NAME = "model.bf16.onnx"


def bf16_backbone_extractor(fp32_path: Path, feature_shapes, threads: int | None = None,
                            batch: int = 16) -> FeatureExtractor:
    """Features of uint8 NHWC images through the model's backbone in BF16 on OpenVINO's CPU
    plugin: the graph cut at the LayerNorms (ffrt.backends.ovgraph, "flows"), the body
    compiled with the BF16 hint and handing over BF16 like the runtime's body does, static
    batch ``batch`` (the last chunk padded)."""
    import openvino as ov
    import openvino.properties.hint as hints

    from ffrt.backends import ovgraph

    core = ov.Core()
    model = core.read_model(str(fp32_path))
    name = model.inputs[0].get_any_name()
    h, w = (int(d.get_length()) for d in list(model.inputs[0].get_partial_shape())[1:3])
    model.reshape({name: [batch, h, w, 3]})
    cut = ovgraph.split(model, "flows", ov.Type.bf16)
    config = {hints.inference_precision: ov.Type.bf16, hints.performance_mode: hints.PerformanceMode.LATENCY}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    request = core.compile_model(cut.body, "CPU", config).create_infer_request()
    outputs = len(cut.body.outputs)

    def run(images: np.ndarray) -> list[np.ndarray]:
        n = len(images)
        if n < batch:
            images = np.concatenate([images, np.zeros((batch - n, *images.shape[1:]), images.dtype)])
        request.infer({0: np.ascontiguousarray(images)})
        # BF16 bits -> float32 (numpy has no bfloat16: the bits are the top half of a float32)
        return [(request.get_output_tensor(k).data.view(np.uint16)[:n].astype(np.uint32) << 16).view(np.float32)
                for k in range(outputs)]

    return features_of(run, (h, w), feature_shapes, "bf16", batch)


def bf16_source(_target: str) -> tuple[str, str]:
    return ("this model's backbone features in BF16 (OpenVINO CPU plugin)",
            "fftrain (PyTorch flows on the backbone's BF16 features from OpenVINO's CPU plugin)")


def bf16_step(request: ExportRequest, made: Made) -> StepOutcome:
    """Write the re-fit BF16 model next to the staged FP32 file, gate it against FP32 on
    validation data and record the gate in it (``refit_epochs`` 0: gate model.onnx itself in
    BF16 and record it there)."""
    from .orchestrate import expected_errors, one_line

    # Asked for (True): every obstacle refuses the export. Left to the machine (None): it is
    # only skipped, since the FP32 file serves everywhere without it.
    asked = request.bf16 is True
    try:
        return _make(request, made, asked)
    except expected_errors() as e:
        if asked:
            raise
        return _not_made(False, one_line(e))


def _make(request: ExportRequest, made: Made, asked: bool) -> StepOutcome:
    from ffrt.backends.openvino import bf16_problem
    from fftrain.data import DataError, resolve

    from .int8_head import DEFAULT_REFIT_EPOCHS, head_refitter

    missing = bf16_problem()
    if missing is not None:
        return _not_made(asked, f"--bf16 fits the head on this CPU's BF16 features, which it cannot compute: "
                         f"{missing}", ExportStatus.UNAVAILABLE)
    data = request.calib or made.payload.get("train_info", {}).get("data")
    if not data:
        return _not_made(asked, "--bf16 needs --calib DATA (the training data: the head is re-fit on it)")
    try:
        split = resolve(str(data))
    except DataError as e:
        return _not_made(asked, f"--bf16 re-fits the flow head on the training normals of {data}: {e}")
    fp32_path = made.path(FP32_NAME)
    epochs = DEFAULT_REFIT_EPOCHS if request.refit_epochs is None else request.refit_epochs
    if epochs == 0:  # the FP32 model itself in BF16: the gate (same-head bounds) goes into model.onnx
        return _gate_and_record(request.force, asked, made.file(FP32_NAME), fp32_path, None, str(data))
    refit = head_refitter(request.ckpt, split, made.parity_images, epochs=epochs, batch_max=request.batch_max,
                          opset=request.opset,
                          features=lambda path, shapes, threads: bf16_backbone_extractor(path, shapes, threads),
                          source=bf16_source)
    import onnx

    proto = refit("bf16", fp32_path)
    out = fp32_path.with_name(BF16_NAME)
    onnx.save(proto, str(out))
    outcome = _gate_and_record(request.force, asked, MadeFile(BF16_NAME, "bf16", None), out, fp32_path, str(data))
    if not outcome.files:
        out.unlink()  # not published; a failed re-fit must not linger in the stage either
    return outcome


def _not_made(asked: bool, why: str, status: ExportStatus = ExportStatus.FAILED) -> StepOutcome:
    """The export's refusal when BF16 was asked for; else the variant's skip (the reason without
    the flag's name: nobody typed it)."""
    if asked:
        return refused(why, status)
    return StepOutcome(status=ExportStatus.SKIPPED, reason=why.replace("--bf16 ", "the BF16 variant ", 1))


def _gate_and_record(force: bool, asked: bool, made: MadeFile, path: Path, reference: Path | None,
                     data: str) -> StepOutcome:
    """Gate ``path`` in BF16 against ``reference`` (None: itself in FP32) and record the gate in it;
    the outcome names the file that holds the gate."""
    from ffcalib.bf16 import bf16_gate, record_gate
    from ffcalib.images import gate_set
    from ffcalib.int8 import as_images
    from ffrt.metafile import read_onnx_meta

    meta = read_onnx_meta(path)
    _, images, labels, source = gate_set(data, meta.input)
    images = as_images(images, meta, None, True, "gate")
    gate = bf16_gate(path, images, labels, source, keep_fp32="head", reference=reference)
    print(f"BF16 gate: {gate.summary()}")
    if not gate.passed and not force:
        if not asked:
            return StepOutcome(status=ExportStatus.SKIPPED, reason="the BF16 variant failed its accuracy gate on "
                               "this model; the FP32 file is the one to run")
        return refused("BF16 failed its accuracy gate; nothing was written (--force writes it, with the failed "
                       "gate recorded: precision='auto' then runs it in FP32)", ExportStatus.GATE_FAILED)
    record_gate(path, gate)
    verdict = GateVerdict(check=f"BF16 gate against {reference.name if reference else 'itself in FP32'} on "
                          f"{len(images)} images (recorded in the file)", passed=gate.passed, forced=not gate.passed)
    recorded = replace(made, meta=read_onnx_meta(path), gates=made.gates + (verdict,))
    return StepOutcome(files=(recorded,))

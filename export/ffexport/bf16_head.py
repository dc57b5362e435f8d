"""``ffexport --bf16``: a model whose flow head is fit on the features its BF16 backbone computes.

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

import sys
from pathlib import Path

import numpy as np

from fftrain.train import FeatureExtractor

from .int8_head import features_of

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


def bf16_step(args, payload, fp32_path: Path, parity_images: np.ndarray) -> tuple[int, Path | None]:
    """Write the re-fit BF16 model next to ``fp32_path`` (in the stage), gate it against FP32 on
    validation data and record the gate in it (``--refit-epochs 0``: gate model.onnx itself in
    BF16 and record it there). Returns (exit code, the file holding the gate)."""
    from ffrt.backends.openvino import bf16_problem
    from fftrain.data import DataError, resolve

    from ffcore.exitcodes import EXIT_FAILED, EXIT_UNAVAILABLE
    from .int8_head import DEFAULT_REFIT_EPOCHS, head_refitter

    missing = bf16_problem()
    if missing is not None:
        print(f"ffexport: error: --bf16 fits the head on this CPU's BF16 features, which it cannot compute: {missing}",
              file=sys.stderr)
        return EXIT_UNAVAILABLE, None
    data = args.calib or payload.get("train_info", {}).get("data")
    if not data:
        print("ffexport: error: --bf16 needs --calib DATA (the training data: the head is re-fit on it)", file=sys.stderr)
        return EXIT_FAILED, None
    try:
        split = resolve(str(data))
    except DataError as e:
        print(f"ffexport: error: --bf16 re-fits the flow head on the training normals of {data}: {e}", file=sys.stderr)
        return EXIT_FAILED, None
    epochs = DEFAULT_REFIT_EPOCHS if args.refit_epochs is None else args.refit_epochs
    if epochs == 0:  # the FP32 model itself in BF16: the gate (same-head bounds) goes into model.onnx
        return _gate_and_record(args, fp32_path, fp32_path, None, str(data))
    refit = head_refitter(args.ckpt, split, parity_images, epochs=epochs, batch_max=args.batch_max, opset=args.opset,
                          features=lambda path, shapes, threads: bf16_backbone_extractor(path, shapes, threads),
                          source=bf16_source)
    import onnx

    proto = refit("bf16", fp32_path)
    out = fp32_path.with_name(BF16_NAME)
    onnx.save(proto, str(out))
    return _gate_and_record(args, out, out, fp32_path, str(data))


def _gate_and_record(args, model: Path, out: Path, reference: Path | None, data: str) -> tuple[int, Path | None]:
    from ffcalib.bf16 import bf16_gate, record_gate
    from ffcalib.images import gate_set
    from ffcalib.int8 import as_images
    from ffrt.meta import read_onnx_meta

    from ffcore.exitcodes import EXIT_GATE

    meta = read_onnx_meta(model)
    _, images, labels, source = gate_set(data, meta.input)
    images = as_images(images, meta, None, True, "gate")
    gate = bf16_gate(model, images, labels, source, keep_fp32="head", reference=reference)
    print(f"BF16 gate: {gate.summary()}")
    if not gate.passed and not args.force:
        print("ffexport: error: BF16 failed its accuracy gate; nothing was written (--force writes it, with the failed "
              "gate recorded: precision='auto' then runs it in FP32)", file=sys.stderr)
        return EXIT_GATE, None
    record_gate(out, gate)
    return 0, out

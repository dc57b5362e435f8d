"""INT8 with a re-fitted flow head: the flows learn the features the INT8 backbone computes.

Why: post-training INT8 of the EfficientNet-Lite0 backbone (per-channel weights, per-tensor
activations, any of minmax / entropy / percentile) leaves a feature error on the maps the
flows read that a classifier shrugs off, but a normalizing flow fit on FP32 features reads
as "unlike any normal part": the plain-PTQ model ranks parts almost at random. The figures
are in benchmarks/README.md ("Figures behind the code's defaults"). The backbone is
frozen, so the remedy is cheap: run the training normals through the Q/DQ backbone (ONNX
Runtime, the same settings as the runtime) and continue training the flows from the FP32
head on those features, with the trainer's own loop, epoch selection and threshold
calibration; a few epochs bring the INT8 model back to FP32's accuracy.

Each encoding gets its own head (the TensorRT and CPU encodings quantize differently), fit
on that encoding's features as ONNX Runtime computes them. TensorRT executes the same Q/DQ
arithmetic with its own kernels (rounding may differ by one step); this has not been
measured on a GPU here.

ffcalib stays torch-free: it takes the callable :func:`head_refitter` returns.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from fftrain import checkpoint
from fftrain.data import DataSplit
from fftrain.model import AnomalyModel
from ffcore.progress import progress
from fftrain.train import FeatureExtractor, TrainSettings, train
from ffrt.metafile import set_proto_meta

from .exporter import ExportError, build_meta, trace_to_onnx
from .parity import FP32_RTOL, check

#: Epochs of flow training on the INT8 features, warm-started from the FP32 head: where the
#: demo model's AUROC per epoch reached FP32's and levelled off (benchmarks/README.md,
#: "Figures behind the code's defaults").
DEFAULT_REFIT_EPOCHS = 6


def int8_backbone_extractor(q_model_bytes: bytes, feature_shapes, threads: int | None = None,
                            batch: int = 16) -> FeatureExtractor:
    """Features of uint8 NHWC images through the Q/DQ backbone of ``q_model_bytes``.

    The backbone subgraph (image -> the LayerNorm inputs) runs on ONNX Runtime CPU with the
    runtime's session settings; outputs are ordered like the model's scales (matched by shape).
    """
    from ffcalib.int8 import backbone_boundary, backbone_submodel
    from ffcore.ort import make_session

    q = onnx.load_from_string(q_model_bytes)
    boundary = backbone_boundary(q)
    input_name = q.graph.input[0].name
    session = make_session(backbone_submodel(q).SerializeToString(), threads)

    def run(images: np.ndarray) -> list[np.ndarray]:
        return session.run(boundary, {input_name: images})

    h, w = q.graph.input[0].type.tensor_type.shape.dim[1:3]
    return features_of(run, (h.dim_value, w.dim_value), feature_shapes, "int8", batch)


def features_of(run: Callable[[np.ndarray], list[np.ndarray]], size: tuple[int, int], feature_shapes, label: str,
                batch: int = 16) -> FeatureExtractor:
    """A FeatureExtractor from ``run`` (uint8 NHWC batch -> backbone feature maps, any order):
    chunks of ``batch``, maps ordered like the model's scales (matched by shape)."""
    probe = run(np.zeros((1, size[0], size[1], 3), np.uint8))
    shapes = [tuple(p.shape[1:]) for p in probe]
    try:
        order = [shapes.index(tuple(s)) for s in feature_shapes]
    except ValueError as e:
        raise ExportError(f"the {label} backbone's feature maps {shapes} do not match the model's {feature_shapes}") from e

    def extract(images: np.ndarray, desc: str) -> list[torch.Tensor]:
        chunks = [run(images[i : i + batch]) for i in progress(range(0, len(images), batch), desc=f"{desc}, {label}",
                                                                unit="batch")]
        return [torch.from_numpy(np.concatenate([c[k] for c in chunks])) for k in order]

    return extract


def int8_source(target: str) -> tuple[str, str]:
    """(what the head was re-fit on, where its thresholds' scores came from) of an INT8 encoding."""
    return (f"this file's INT8 backbone features ({target} encoding)",
            f"fftrain (PyTorch flows on onnxruntime-cpu features of the {target} encoding)")


def head_refitter(
    ckpt_path: str | os.PathLike,
    split: DataSplit,
    parity_images: np.ndarray,
    *,
    epochs: int = DEFAULT_REFIT_EPOCHS,
    batch_max: int = 32,
    opset: int = 18,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    features: Callable[..., FeatureExtractor] = int8_backbone_extractor,
    source: Callable[[str], tuple[str, str]] = int8_source,
) -> Callable[[str, bytes], onnx.ModelProto]:
    """The ``refit_head`` callable for ``ffcalib.int8.quantize_model`` (and, with ``features``
    and ``source`` of the BF16 backbone, ffexport --bf16: bf16_head.py).

    For each encoding: warm-start from the checkpoint, train the flows for ``epochs`` on the
    Q/DQ backbone's features of ``split`` (train normals; validation normals and synthetic
    defects for epoch selection and thresholds, as fftrain does), re-export the FP32 graph
    with that head, check its parity against PyTorch on ``parity_images`` and return it with
    re-calibrated thresholds and ``head_fit`` in its metadata.
    """
    payload = checkpoint.load_payload(ckpt_path)
    sha256 = checkpoint.sha256(ckpt_path)
    stored = payload.get("train_info", {}).get("settings", {})
    settings = TrainSettings(
        epochs=epochs,
        batch_size=int(stored.get("batch_size", 32)),
        lr=float(stored.get("lr", 1e-3)),
        weight_decay=float(stored.get("weight_decay", 1e-5)),
        grad_clip=float(stored.get("grad_clip", 1.0)),
        target_frr=float(payload.get("calibration", {}).get("target_frr", 0.02)),
        # The re-fit head is taught the same nuisances as the trained one (and the file's
        # metadata, taken from the checkpoint, says so).
        augment_views=int(stored.get("augment_views", TrainSettings.augment_views)),
        augment_jpeg=float(stored.get("augment_jpeg", 0.0)),
        threads=threads,
        progress=True,
    )

    def refit(target: str, backbone) -> onnx.ModelProto:
        model, _ = checkpoint.load(ckpt_path)
        what, scored_on = source(target)
        log(f"re-fitting the flow head on {what} ({epochs} epochs, "
            f"{len(split.train)} train / {len(split.val)} validation normals of {split.name})")
        extract = features(backbone, model.feature_shapes, threads)
        result = train(model.config, split, settings, log=lambda m: log(f"  {m}"), model=model, extract=extract)
        return _export_refit(result.model, payload, result, sha256, target, (what, scored_on), epochs, parity_images,
                             batch_max, opset)

    return refit


def _export_refit(model: AnomalyModel, payload: dict, result, sha256: str, target: str, source: tuple[str, str],
                  epochs: int, parity_images: np.ndarray, batch_max: int, opset: int) -> onnx.ModelProto:
    # The re-fit's thresholds were scored by PyTorch flows on the features the head was fit on.
    what, scored_on = source
    calibration = {**result.calibration, "calibrated_on": scored_on}
    refit_payload = {**payload, "state_dict": model.state_dict(), "calibration": calibration}
    how = (
        f"flows re-fit on {what}: {epochs} epochs from the FP32 "
        f"head, kept epoch {result.best_epoch}; thresholds re-calibrated ({result.calibration['source']})"
    )
    meta = build_meta(model, refit_payload, sha256, batch_max, opset).model_copy(update={"head_fit": how})
    proto = trace_to_onnx(model, batch_max, opset)
    proto.producer_name = "ffexport"
    set_proto_meta(proto, meta)
    # The re-exported FP32 graph must compute what the re-fit PyTorch model computes.
    with tempfile.TemporaryDirectory(prefix="ffexport.refit.") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(proto, str(path))
        report = check(model, path, parity_images, tolerance_rel=FP32_RTOL)
    if not report.ok:
        raise ExportError(f"the re-fitted {target} head's ONNX graph disagrees with PyTorch:\n{report}")
    return proto

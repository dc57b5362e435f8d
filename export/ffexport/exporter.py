"""Checkpoint -> one self-describing ONNX file.

torch.onnx's dynamo exporter (the default since torch 2.9) traces ``FusedGraph``; the
weights are embedded (``external_data=False``): a model is one file for the user, and
models of every kind are far below ONNX's 2 GB protobuf limit. The ``ModelMeta`` goes into
``metadata_props`` and the file is written atomically.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import onnx
import torch
from ffcore.versions import package_version
from pydantic import ValidationError

from ffcore.files import atomic_write_bytes
from ffrt.meta import (AugmentationInfo, BackboneInfo, FlowInfo, InputSpec, MemoryBankSpec, ModelInfo, ModelMeta,
                       OutputSpec, ScoreSpec, ScoreStats, ThresholdEstimate, Thresholds)
from ffrt.metafile import set_proto_meta
from fftrain.head import map_units
from fftrain.memory_bank import BANK_STRIDE
from fftrain.model import AnomalyModel

from .graph import INPUT_NAME, OUTPUT_NAMES, FusedGraph
from .request import DEFAULT_BATCH_MAX, DEFAULT_OPSET, opset_problem

ONNX_SIZE_LIMIT = 2 * 1024**3
#: Where fftrain's thresholds were scored (ModelMeta.thresholds.calibrated_on).
TRAINER_BACKEND = "fftrain (PyTorch, FP32)"


class ExportError(RuntimeError):
    """The export cannot be completed; the message says why and what to do."""


def _version(dist: str) -> str:
    return package_version(dist) or "not installed"


def build_meta(model: AnomalyModel, payload: dict[str, Any], ckpt_sha256: str, batch_max: int, opset: int) -> ModelMeta:
    cal = payload.get("calibration") or {}
    if not isinstance(cal, dict) or "image_threshold" not in cal or "pixel_threshold" not in cal:
        raise ExportError("the checkpoint has no calibration (thresholds); retrain it with fftrain")
    try:
        return _meta(model, payload, cal, ckpt_sha256, batch_max, opset)
    except (ValidationError, TypeError, ValueError) as e:
        # The schema refuses what the runtime would refuse (non-finite thresholds, ...): say
        # so here rather than ship a file no Detector loads.
        msg = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
        loc = ".".join(map(str, e.errors()[0]["loc"])) + ": " if isinstance(e, ValidationError) else ""
        raise ExportError(f"the checkpoint's calibration or config cannot be described ({loc}{msg}); "
                          "retrain it with fftrain") from e


def _estimate(point: dict | None) -> ThresholdEstimate | None:
    return None if point is None else ThresholdEstimate.of(point)


def _meta(model: AnomalyModel, payload: dict[str, Any], cal: dict, ckpt_sha256: str, batch_max: int, opset: int) -> ModelMeta:
    cfg = model.config
    stats = cal.get("score_stats")
    return ModelMeta(
        input=InputSpec(
            name=INPUT_NAME,
            height=cfg.height,
            width=cfg.width,
            resize_interpolation="area",
            resize_mode=cfg.resize_mode,
            color=cfg.input_color or "rgb",
            mean=tuple(float(v) for v in model.mean.flatten()),
            std=tuple(float(v) for v in model.std.flatten()),
        ),
        outputs=OutputSpec(anomaly_map=OUTPUT_NAMES[0], score=OUTPUT_NAMES[1]),
        score=ScoreSpec(
            map_units=map_units(cfg.map_normalization, full_likelihood=model.kind.map_counts_logdet),
            reduction=cfg.score_reduction,
            topk_fraction=cfg.topk_fraction if cfg.score_reduction == "topk_mean" else None,
            strides=None if tuple(cfg.score_strides) == model.strides else tuple(cfg.score_strides),
            memory_bank=MemoryBankSpec(stride=BANK_STRIDE, vectors=cfg.memory_bank_vectors, weight=cfg.memory_bank_weight,
                                       map_weight=cfg.memory_bank_map_weight) if model.bank is not None else None,
        ),
        thresholds=Thresholds(image=cal["image_threshold"], pixel=cal["pixel_threshold"], source=cal.get("source", ""),
                              calibrated_on=cal.get("calibrated_on", TRAINER_BACKEND),
                              # Checkpoints written before the estimates were recorded have none.
                              image_estimate=_estimate(cal.get("image_estimate")),
                              pixel_estimate=_estimate(cal.get("pixel_estimate"))),
        score_stats=ScoreStats(**stats) if stats else None,
        precision="fp32",
        target="any",
        backbone=BackboneInfo(
            name=cfg.backbone, pretrained=not cfg.random_backbone, weights_sha256=payload.get("backbone_sha256")
        ),
        model=ModelInfo(kind=cfg.model,
                        condition_channels=cfg.condition_channels if model.kind.position_conditioned else None),
        flow=FlowInfo(
            steps=cfg.flow_steps,
            hidden_ratio=cfg.hidden_ratio,
            hidden_channels=cfg.flow_hidden_channels,
            conv3x3_only=cfg.conv3x3_only,
            clamp=cfg.clamp,
            feature_pooling=cfg.feature_pooling,
        ),
        feature_strides=model.strides,
        augmentation=_augmentation(payload),
        batch_max=batch_max,
        opset=opset,
        source_checkpoint_sha256=ckpt_sha256,
        tool_versions={
            "ffrt": _version("ffrt"),
            "torch": str(torch.__version__),
            "onnx": onnx.__version__,
            "onnxscript": _version("onnxscript"),
        },
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _augmentation(payload: dict[str, Any]) -> AugmentationInfo | None:
    """From the checkpoint's training settings; checkpoints from before the codec option had none."""
    settings = payload.get("train_info", {}).get("settings", {})
    if "augment_views" not in settings:
        return None
    return AugmentationInfo(views=int(settings["augment_views"]), jpeg_share=float(settings.get("augment_jpeg", 0.0)))


def trace_to_onnx(model: AnomalyModel, batch_max: int, opset: int) -> onnx.ModelProto:
    """The fused graph as an in-memory ModelProto with a dynamic batch dimension."""
    height, width = model.config.image_size
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    # torch.export refuses a Dim whose min equals its max, so batch_max 1 traces with room for 2;
    # the file still declares batch_max 1 in its metadata, which the runtime enforces.
    batch = torch.export.Dim("batch", min=1, max=max(2, batch_max))
    try:
        program = torch.onnx.export(
            FusedGraph(model).eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"image": {0: batch}},
            opset_version=opset,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    except Exception as e:  # the exporter raises many types; the user needs one message
        raise ExportError(f"torch.onnx.export failed: {type(e).__name__}: {e}") from e
    proto = program.model_proto
    # Name the dynamic dimension readably for tools such as Netron and trtexec.
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    return proto


def export_onnx(model: AnomalyModel, payload: dict[str, Any], ckpt_sha256: str, out: str | os.PathLike,
                batch_max: int = DEFAULT_BATCH_MAX, opset: int = DEFAULT_OPSET,
                precision: str = "fp32") -> tuple[Path, ModelMeta]:
    """``precision`` is what the metadata records: the dtypes are those of ``model``'s
    weights (precision.py makes the FP16 variant)."""
    problem = opset_problem(opset)
    if problem is not None:
        raise ExportError(problem)
    out = Path(out)
    meta = build_meta(model, payload, ckpt_sha256, batch_max, opset).model_copy(update={"precision": precision})
    proto = trace_to_onnx(model, batch_max, opset)
    proto.producer_name = "ffexport"
    set_proto_meta(proto, meta)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if len(data) >= ONNX_SIZE_LIMIT:
        raise ExportError("the model exceeds ONNX's 2 GB single-file limit; use a smaller backbone or image size")
    atomic_write_bytes(out, data)
    return out, meta

"""FP16: a mixed-precision ONNX born FP16 when it is traced, the head FP32 by construction.

"Precision is decided in the ONNX, TensorRT only compiles it" (docs/design.md): TensorRT 10
deprecates and 11 removes the FP16 builder flag, so a strongly typed network runs each
tensor in the type the ONNX gives it. This module writes that ONNX from PyTorch itself:
a copy of the FastFlow with the backbone (and the norms and flows, :data:`HALF_STAGES`)
turned to FP16 is traced by the same exporter as the FP32 file. Every stage of the model
casts its input to the dtype of its own weights and the anomaly head computes in FP32
whatever it is fed (fftrain/model.py, fftrain/head.py), so the graph carries exactly
one Cast at each stage boundary and the head (z*z, channel mean, standardization, Resize,
fusion, top-k score) is the one definition training uses, in FP32: ``0.5 * mean_c z^2``
of a defect exceeds FP16's 65504 once |z| > 256, and a saturated map scores every defect
``inf``. Input ``image`` stays uint8 and the outputs float32 with unchanged names, so the
runtime does not care which variant it loads.

Why tracing a half module works on a CPU-only host: ``torch.export`` (under
``torch.onnx.export(dynamo=True)``) traces with fake tensors, so no FP16 kernel is
executed. Nothing here runs the half model eagerly; the FP16 file is checked against the
FP32 file with onnxruntime (fp16_gate.py).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from torch import nn

from fftrain.model import AnomalyModel

from .exporter import ExportError, export_onnx
from .request import DEFAULT_BATCH_MAX, DEFAULT_OPSET

FP16_SUFFIX = ".fp16.onnx"
#: The FastFlow stages that run in FP16 in the FP16 file (attributes of ``FastFlow``; the
#: norms and flows go together, the flow reads the norm's output). The head never does.
#: Flows included: they hold most of the multiply-accumulates of the default model, and the
#: FP16 gate on real images passes with them with nearly the margin of the backbone alone
#: (the backbone's rounding dominates the error).
HALF_STAGES = ("backbone", "norms", "flows")


def half_model(model: AnomalyModel, stages: tuple[str, ...] = HALF_STAGES) -> AnomalyModel:
    """A copy of ``model`` whose ``stages`` hold FP16 weights; the rest (input
    normalization, head buffers) stays FP32. ``model`` itself is not touched."""
    unknown = set(stages) - set(HALF_STAGES)
    if unknown or ("norms" in stages) != ("flows" in stages):
        raise ValueError(f"FP16 stages {stages}: choose among {HALF_STAGES}, norms and flows together")
    half = copy.deepcopy(model).eval()
    fold_batch_norms(half.backbone)
    for name in stages:
        getattr(half, name).half()
    return half


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d into the Conv2d that feeds it, in place, in FP32;
    the BatchNorm becomes an Identity. Returns how many were folded.

    Why here: the exporter folds them anyway (the FP32 file has no BatchNormalization), but
    on a half module it would fold FP16-rounded statistics in FP16 arithmetic: every folded
    weight rounded twice, and the FP16 gate's map error on the default model beyond its
    tolerance. Folded here, each weight is rounded to FP16 once, from its FP32 value. Pairs
    are found by dataflow (torch.fx: a conv whose only reader is the norm), not by module
    names or registration order.
    """
    from torch.fx import symbolic_trace
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    modules = dict(module.named_modules())
    try:
        graph = symbolic_trace(module).graph
    except Exception as e:  # fx raises many types on untraceable code; the user needs one message
        raise ExportError(f"cannot fold the backbone's batch norms before FP16: torch.fx cannot trace "
                          f"{type(module).__name__} ({type(e).__name__}: {e})") from e
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        src = node.args[0]
        if (src.op != "call_module" or not isinstance(modules[src.target], nn.Conv2d) or len(src.users) != 1
                or calls[src.target] != 1 or calls[node.target] != 1):
            continue
        module.set_submodule(src.target, fuse_conv_bn_eval(modules[src.target], modules[node.target]))
        module.set_submodule(node.target, nn.Identity())
        folded += 1
    return folded


def export_fp16(model: AnomalyModel, payload: dict[str, Any], ckpt_sha256: str, out: str | os.PathLike,
                batch_max: int = DEFAULT_BATCH_MAX, opset: int = DEFAULT_OPSET,
                stages: tuple[str, ...] = HALF_STAGES):
    """Trace the FP16 variant of ``model`` into ``out`` (atomically); returns (path, meta).

    The metadata is the FP32 export's with ``precision="fp16"``.
    """
    return export_onnx(half_model(model, stages), payload, ckpt_sha256, Path(out), batch_max, opset,
                       precision="fp16")

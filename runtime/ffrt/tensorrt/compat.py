"""Can TensorRT 10 build this ONNX graph? Decided from the graph alone, without TensorRT or a GPU.

A graph that passes every CPU check (ONNX Runtime parity, the precision gates) can still fail
to parse or build on the line PC, the first time it meets a GPU. Each rule below is one the
TensorRT 10 ONNX parser states (:mod:`ffrt.tensorrt.onnx_ops`, onnx-tensorrt's support matrix):

* every node is an ONNX-domain operator the parser supports (no plugin or custom-domain op);
* the type of each node's data input (its first input) is one the operator accepts;
* **UINT8 only at the network's edge**: a uint8 graph input may feed Cast nodes only, and a
  uint8 tensor inside the graph is refused ("UINT8 is only supported as network input or
  output"; a maintainer in NVIDIA/TensorRT issue 3985: "All UINT8 inputs must directly feed
  into a cast layer");
* TopK: a constant K of at most :data:`ffcore.trtlimits.TOPK_MAX_K`, ``sorted`` = 1;
* the ``axes`` of Reduce*, Slice, Squeeze, Unsqueeze and Pad are constants;
* Quantize/DequantizeLinear zero points are zero (TensorRT's quantization is symmetric);
* Resize uses a mode and coordinate transformation the parser supports, without antialiasing;
* graph inputs have one dynamic dimension at most, the batch (axis 0), which the engine's
  optimization profile covers; every other dimension is fixed.

ffexport runs it on every file it writes (and refuses ``--engine`` on a graph that fails),
the engine build runs it before its first TensorRT call, and ``ffrt doctor MODEL.onnx``
prints it. Files written for ONNX Runtime's CPU INT8 kernels (uint8 activations with zero
points) fail it by design: they are not meant for TensorRT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ffcore.trtlimits import TOPK_MAX_K

from .onnx_ops import SUPPORTED, UNSUPPORTED

#: ONNX TensorProto element types by the names the support matrix uses.
_TYPE_NAMES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE",
               16: "BF16", 17: "FP8", 18: "FP8", 19: "FP8", 20: "FP8", 22: "INT4"}
_ONNX_DOMAINS = ("", "ai.onnx")
_CONSTANT_AXES = {"ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
                  "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "Slice", "Squeeze", "Unsqueeze", "Pad"}
#: Where the ``axes`` of each op live when given as an input (opset >= 13/18).
_AXES_INPUT = {"Slice": 3, "Pad": 3, "Squeeze": 1, "Unsqueeze": 1}
_RESIZE_COORDINATES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}


@dataclass(frozen=True)
class Finding:
    """One reason TensorRT would refuse the graph, at one node (or graph input)."""

    node: str
    op: str
    problem: str

    def __str__(self) -> str:
        return f"{self.op} {self.node!r}: {self.problem}"


def _load(model):
    import onnx

    if isinstance(model, (str, os.PathLike)):
        return onnx.load(str(model))
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return model


def _constants(graph) -> dict:
    """Initializers and Constant-node outputs of ``graph``, by tensor name, as numpy values."""
    import onnx.numpy_helper as nh

    values = {t.name: nh.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = nh.to_array(attr.t)
                elif attr.name in ("value_int", "value_ints"):
                    values[node.output[0]] = attr.i if attr.name == "value_int" else list(attr.ints)
    return values


def _types(model) -> dict[str, int]:
    """Element type of every tensor whose type ONNX can infer (inputs, outputs, weights, activations)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference rejects some valid graphs; fall back to what is declared
        inferred = model
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return {k: v for k, v in types.items() if v}


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _node_findings(node, types, consts) -> list[str]:
    import numpy as np

    op = node.op_type
    out: list[str] = []
    data = node.input[0] if node.input else ""
    t = _TYPE_NAMES.get(types.get(data, 0)) if data else None
    allowed = SUPPORTED[op][0]
    if t is not None and allowed and t not in allowed and not (t == "DOUBLE" and "FP32" in allowed):
        out.append(f"input {data!r} is {t}; TensorRT's {op} takes {', '.join(allowed)}")
    if op == "TopK":
        k = consts.get(node.input[1]) if len(node.input) > 1 else None
        if k is None:
            out.append(f"K is computed at run time; TensorRT needs a K of at most {TOPK_MAX_K}, which cannot be "
                       "checked before the build")
        elif (k := int(np.asarray(k).reshape(-1)[0])) > TOPK_MAX_K:
            out.append(f"K = {k}; TensorRT builds TopK only for K < {TOPK_MAX_K + 1} (K <= {TOPK_MAX_K})")
        if int(_attr(node, "sorted", 1)) != 1:
            out.append("sorted = 0; TensorRT's TopK needs sorted = 1")
    if op in _CONSTANT_AXES:
        i = _AXES_INPUT.get(op, 1)
        if len(node.input) > i and node.input[i] and node.input[i] not in consts:
            out.append(f"its axes ({node.input[i]!r}) are computed at run time; TensorRT needs them constant")
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zp = consts.get(node.input[2])
        if zp is None or np.any(np.asarray(zp) != 0):
            out.append("zero point is not a constant 0; TensorRT quantizes symmetrically (an ONNX Runtime CPU "
                       "encoding, not a TensorRT one)")
    if op == "Resize":
        mode = _attr(node, "mode", b"nearest")
        coord = _attr(node, "coordinate_transformation_mode", b"half_pixel")
        mode, coord = (v.decode() if isinstance(v, bytes) else v for v in (mode, coord))
        if mode not in _RESIZE_MODES:
            out.append(f"mode {mode!r}; TensorRT resizes with {', '.join(sorted(_RESIZE_MODES))}")
        if coord not in _RESIZE_COORDINATES:
            out.append(f"coordinate transformation {coord!r} is not one TensorRT supports")
        if int(_attr(node, "antialias", 0)):
            out.append("antialias = 1; TensorRT does not antialias")
    return out


def check(model) -> list[Finding]:
    """Every reason the TensorRT 10 ONNX parser would refuse ``model`` (a path, bytes or
    ModelProto); empty when it builds as far as the graph can tell."""
    model = _load(model)
    g = model.graph
    types, consts = _types(model), _constants(g)
    readers: dict[str, list] = {}
    for node in g.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    found: list[Finding] = []
    initializers = {t.name for t in g.initializer}
    outputs = {o.name for o in g.output}
    for v in g.input:
        if v.name in initializers:
            continue
        dims = v.type.tensor_type.shape.dim
        dynamic = [i for i, d in enumerate(dims) if i > 0 and (not d.HasField("dim_value") or d.dim_value <= 0)]
        if dynamic:
            found.append(Finding(v.name, "input", f"axes {dynamic} are dynamic; an engine's optimization profile "
                                 "covers the batch (axis 0) only, the image size must be fixed"))
        if types.get(v.name) == 2:
            bad = sorted({n.op_type for n in readers.get(v.name, []) if n.op_type != "Cast"})
            if bad:
                found.append(Finding(v.name, "input", f"uint8 input feeds {', '.join(bad)}; TensorRT takes a uint8 "
                                     "network input only into a Cast (cast first, then change the layout)"))
    graph_inputs = {v.name for v in g.input}
    for i, node in enumerate(g.node):
        name = node.name or (node.output[0] if node.output else f"#{i}")
        if node.domain not in _ONNX_DOMAINS:
            found.append(Finding(name, node.op_type, f"operator of domain {node.domain!r}: TensorRT would need a "
                                 "plugin for it"))
            continue
        if node.op_type in UNSUPPORTED or node.op_type not in SUPPORTED:
            found.append(Finding(name, node.op_type, "not an operator the TensorRT 10 ONNX parser supports"))
            continue
        internal_u8 = [t for t in node.input if t and types.get(t) == 2 and t not in graph_inputs]
        internal_u8 += [t for t in node.output if t and types.get(t) == 2 and t not in outputs]
        if internal_u8:
            found.append(Finding(name, node.op_type, f"uint8 tensor {internal_u8[0]!r} inside the graph; TensorRT has "
                                 "UINT8 only as a network input or output"))
        found.extend(Finding(name, node.op_type, p) for p in _node_findings(node, types, consts))
    return found


def problems(model) -> list[str]:
    """:func:`check` as one line per finding."""
    return [str(f) for f in check(model)]


def refusal(where: str, found: list[str]) -> str:
    """One line: what cannot build, and what to do."""
    shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
    return (f"{where}: TensorRT cannot build this graph ({shown}); re-export it with this ffexport "
            "(`ffrt doctor FILE.onnx` lists every finding)")

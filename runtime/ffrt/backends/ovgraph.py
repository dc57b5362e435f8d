"""Graph surgery on an OpenVINO ``ov.Model`` of an ffrt graph: where the parts that must stay
FP32 start, cutting the graph there, and which precision each node actually ran in.

Why cut instead of marking nodes: OpenVINO's CPU plugin runs a whole graph in the precision of
``INFERENCE_PRECISION_HINT`` except a node carrying the ``DisablePrecisionConversion`` runtime
attribute (``ov::disable_fp16_compression``; its Node constructor sets ``keepOriginalPrecision``
from it, and ``Graph::EnforceInferencePrecision`` skips such nodes: openvinotoolkit/openvino
src/plugins/intel_cpu/src/node.cpp and graph.cpp; the plugin's InferPrecisionBF16DisableTest
checks it on MatMul). From Python that attribute can only be set as a string (``precise_0``),
which OpenVINO 2026.4 no longer reads, and marking through the IR (``<attribute
name="precise" version="0"/>``) was measured here to leave the anomaly head's Interpolate nodes
and the Subgraph nodes fused by the plugin's own passes in BF16 (the attribute is not copied to
nodes a transformation creates). Two compiled models, the body in BF16 and the rest compiled
with an FP32 hint, keep every node of the rest in FP32 by construction, and
:func:`runtime_precisions` verifies it on the runtime model.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Where FP32 starts for each BF16 configuration: "head" = the anomaly head (z*z onward:
#: the per-position standardization, upsampling, fusion and top-k score); "flows" = the
#: per-scale LayerNorm onward (flows and head); "none" = the whole graph in BF16, OpenVINO's
#: own default on AMX CPUs, never chosen by ffrt on its own.
KEEP_FP32 = ("head", "flows", "none")


#: Names of the casts ``split(boundary=...)`` puts at the end of the body and the start of the tail.
BOUNDARY_OUT, BOUNDARY_IN = "ffrt_cut_to_boundary_", "ffrt_cut_from_boundary_"


class GraphCutError(ValueError):
    """The graph has no node where the requested FP32 part starts."""


def _same_output(a, b) -> bool:
    return a.get_node().get_friendly_name() == b.get_node().get_friendly_name() and a.get_index() == b.get_index()


def _is_square(op) -> bool:
    # The rule of ffexport.precision.head_nodes (ONNX side): the head starts at z*z or z**2.
    kind = op.get_type_name()
    if kind == "Multiply":
        return _same_output(op.input_value(0), op.input_value(1))
    if kind == "Power":
        exponent = op.input_value(1).get_node()
        return exponent.get_type_name() == "Constant" and bool(np.all(exponent.get_data() == 2))
    return False


def fp32_seeds(model, keep_fp32: str) -> list:
    """The nodes where the FP32 part of ``keep_fp32`` starts (found by structure, not names)."""
    ops = model.get_ordered_ops()
    if keep_fp32 == "head":
        seeds = [op for op in ops if _is_square(op)]
        what = "no z*z node (the anomaly head's square of the flow output)"
    elif keep_fp32 == "flows":
        # ONNX LayerNormalization arrives as MVN (+ scale and shift) in OpenVINO.
        seeds = [op for op in ops if op.get_type_name() == "MVN"]
        what = "no LayerNorm (MVN) node in front of the flows"
    else:
        raise GraphCutError(f"keep_fp32 must be one of {', '.join(KEEP_FP32[:2])} for a cut, not {keep_fp32!r}")
    if not seeds:
        raise GraphCutError(f"{what}; cannot tell where FP32 must start. Re-export the model with ffexport.")
    return seeds


@dataclass
class Cut:
    body: object  # ov.Model: the original input -> the tensors the tail reads
    tail: object  # ov.Model: those tensors (Parameters "cut0", "cut1", ...) -> the original outputs
    tail_nodes: frozenset[str]  # friendly names of the original nodes in the tail


def split(model, keep_fp32: str, boundary=None) -> Cut:
    """Cut ``model`` (modified in place: do not use it afterwards) where FP32 starts.

    ``boundary``: an element type (``ov.Type.bf16``) the float tensors crossing the cut are
    converted to at the end of the body and back to their own type at the start of the tail.
    """
    import openvino as ov

    tail_names: set[str] = set()
    tail = []
    queue = deque(fp32_seeds(model, keep_fp32))
    while queue:
        op = queue.popleft()
        name = op.get_friendly_name()
        if name in tail_names:
            continue
        tail_names.add(name)
        tail.append(op)
        for out in op.outputs():
            queue.extend(t.get_node() for t in out.get_target_inputs())

    # Every body output the tail reads becomes one Parameter of the tail (constants are copied
    # by reference: a Constant belongs to whichever model uses it).
    crossing: dict[tuple[str, int], tuple] = {}
    for op in tail:
        for inp in op.inputs():
            src = inp.get_source_output()
            node = src.get_node()
            if node.get_friendly_name() in tail_names or node.get_type_name() == "Constant":
                continue
            crossing.setdefault((node.get_friendly_name(), src.get_index()), (src, []))[1].append(inp)
    params, body_results = [], []
    for i, (src, inputs) in enumerate(crossing.values()):
        kind = src.get_element_type()
        if boundary is not None and kind.is_real() and kind != boundary:
            param = ov.opset13.parameter(src.get_partial_shape(), boundary, name=f"cut{i}")
            body_results.append(ov.opset13.result(ov.opset13.convert(src, boundary, name=f"{BOUNDARY_OUT}{i}")))
            entry = ov.opset13.convert(param, kind, name=f"{BOUNDARY_IN}{i}").output(0)
        else:
            param = ov.opset13.parameter(src.get_partial_shape(), kind, name=f"cut{i}")
            body_results.append(ov.opset13.result(src))
            entry = param.output(0)
        for inp in inputs:
            inp.replace_source_output(entry)
        params.append(param)
    outputs = list(model.get_results())
    body = ov.Model(body_results, list(model.get_parameters()), "ffrt_body")
    tail_model = ov.Model(outputs, params, "ffrt_fp32_tail")
    return Cut(body, tail_model, frozenset(tail_names))


class RuntimeNode(NamedTuple):
    name: str
    kind: str  # the CPU plugin's layer type: Convolution, Eltwise, Subgraph, Reorder, Convert, ...
    precision: str  # runtime precision: "f32", "bf16", "u8", ...
    outputs: str  # output precisions, comma-separated
    originals: tuple[str, ...]  # friendly names of the model's nodes fused into this one


def runtime_precisions(compiled) -> list[RuntimeNode]:
    """Every node of a compiled model as OpenVINO's runtime model reports it
    (``get_runtime_model()``; rt_info keys ``layerType``, ``runtimePrecision``,
    ``outputPrecisions``, ``originalLayersNames``)."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()

        def get(key: str) -> str:
            return info[key].astype(str) if key in info else ""

        out.append(RuntimeNode(op.get_friendly_name(), get("layerType"), get("runtimePrecision"), get("outputPrecisions"),
                               tuple(n for n in get("originalLayersNames").split(",") if n)))
    return out


def precision_counts(compiled) -> dict[str, int]:
    """How many compute nodes ran in each precision (constants, inputs and outputs left out).

    A node that contains one of :func:`split`'s casts back from the boundary type, and writes
    FP32, counts as FP32: the plugin fuses that cast into the next node (e.g. a Subgraph of
    Convert + z*z, reported with its BF16 input's precision), which converts first and then
    computes in the model's FP32 types. Any other node is counted in its runtime precision."""
    skip = {"Const", "Input", "Output"}
    counts: Counter = Counter()
    for n in runtime_precisions(compiled):
        if n.kind in skip:
            continue
        casts_in = any(o.startswith(BOUNDARY_IN) for o in n.originals)
        counts["f32" if casts_in and set(n.outputs.split(",")) == {"f32"} else n.precision] += 1
    return dict(counts)

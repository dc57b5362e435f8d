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

import numpy as np

#: Where FP32 starts for each BF16 configuration: "head" = the anomaly head (z*z onward:
#: the per-position standardization, upsampling, fusion and top-k score); "flows" = the
#: per-scale LayerNorm onward (flows and head); "none" = the whole graph in BF16, OpenVINO's
#: own default on AMX CPUs, never chosen by ffrt on its own.
KEEP_FP32 = ("head", "flows", "none")


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


def split(model, keep_fp32: str) -> Cut:
    """Cut ``model`` (modified in place: do not use it afterwards) where FP32 starts."""
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
        param = ov.opset13.parameter(src.get_partial_shape(), src.get_element_type(), name=f"cut{i}")
        body_results.append(ov.opset13.result(src))
        for inp in inputs:
            inp.replace_source_output(param.output(0))
        params.append(param)
    outputs = list(model.get_results())
    body = ov.Model(body_results, list(model.get_parameters()), "ffrt_body")
    tail_model = ov.Model(outputs, params, "ffrt_fp32_tail")
    return Cut(body, tail_model, frozenset(tail_names))


def runtime_precisions(compiled) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(runtime node name, layer type, runtime precision, original node names) of every node
    of a compiled model, as OpenVINO's runtime model reports them (``get_runtime_model()``;
    rt_info keys ``layerType``, ``runtimePrecision``, ``originalLayersNames``)."""
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        out.append((op.get_friendly_name(), info["layerType"].astype(str), info["runtimePrecision"].astype(str),
                    tuple(n for n in names.split(",") if n)))
    return out


def precision_counts(compiled) -> dict[str, int]:
    """How many compute nodes ran in each precision (constants, inputs and outputs left out)."""
    skip = {"Const", "Input", "Output"}
    return dict(Counter(p for _, kind, p, _ in runtime_precisions(compiled) if kind not in skip))

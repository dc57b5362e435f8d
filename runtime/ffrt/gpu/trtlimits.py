"""Limits of TensorRT that an ONNX graph can break, checked without TensorRT or a GPU.

A graph that passes every CPU check (ONNX Runtime parity, FP16/INT8 gates) can still fail
to build on the line PC. What is known and checked here:

* **TopK: K <= 3840.** The ``add_topk`` and ``ITopKLayer`` docstrings of the TensorRT
  10.0, 10.16 and 11.4 Python bindings: "Currently only values of K up to 3840 are
  supported." (tests/runtime/test_tensorrt_bindings.py reads it from both lines' genuine
  bindings.) K must also be a constant here: ffrt graphs always have one, and a K computed
  at run time could not be checked before the line PC.

ffexport refuses such a graph at export time, and the engine build refuses it before the
first TensorRT call, each with one line. fftrain's head never produces one: a score over
more than 3840 pixels is computed in rounds of at most 3840 (fftrain.head.topk_sum).
"""

from __future__ import annotations

import os

#: TensorRT's largest TopK K (10.x and 11.x bindings' docstrings).
TOPK_MAX_K = 3840


def _constants(graph) -> dict:
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


def problems(model) -> list[str]:
    """Every reason TensorRT would refuse to build ``model`` (a path, bytes or ModelProto)."""
    import numpy as np
    import onnx

    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(str(model))
    elif isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    consts = _constants(model.graph)
    out = []
    for node in model.graph.node:
        if node.op_type != "TopK":
            continue
        name = node.name or node.output[0]
        k_input = node.input[1] if len(node.input) > 1 else None
        k = consts.get(k_input) if k_input else None
        if k is None:
            out.append(f"TopK {name!r} has a K computed at run time; TensorRT needs K <= {TOPK_MAX_K}, which cannot be "
                       "checked before the build")
            continue
        k = int(np.asarray(k).reshape(-1)[0])
        if k > TOPK_MAX_K:
            out.append(f"TopK {name!r} has K = {k}, TensorRT builds TopK only for K <= {TOPK_MAX_K}")
    return out


def refusal(where: str, found: list[str]) -> str:
    """One line: what cannot build, and what to do."""
    return (f"{where}: TensorRT cannot build this graph ({'; '.join(found)}); re-export it with this ffexport "
            "(its score takes the top pixels in rounds of at most 3840), or lower --topk-fraction / the input size")

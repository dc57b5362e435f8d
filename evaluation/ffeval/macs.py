"""Multiply-accumulates of an ONNX graph, from its shapes (onnx shape inference).

Counted (per image, batch dimension fixed to 1 before shape inference):

- ``Conv`` / ``ConvInteger`` / ``QLinearConv``: N x C_out x prod(output spatial) x
  (C_in / group) x prod(kernel). Bias adds are not counted.
- ``ConvTranspose``: N x C_in x prod(input spatial) x (C_out / group) x prod(kernel).
- ``MatMul`` / ``MatMulInteger`` / ``QLinearMatMul``: prod(output shape) x K (K = the
  shared inner dimension).
- ``Gemm``: M x N x K.

Not counted: everything else (element-wise ops, normalization, activations, pooling,
Resize, reductions, TopK). In FastFlow those are a few percent of the arithmetic but can be
a larger share of the time, since they are memory-bound. The count is of the exported
graph as stored; ONNX Runtime's optimizer fuses nodes but does not change the MACs.
1 MAC = 2 FLOP when converting to GFLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from pathlib import Path

COUNTED = ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MatMul", "MatMulInteger", "QLinearMatMul", "Gemm")
#: Position of the weight input per op type.
_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_MATMUL_INPUTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}


class MacCountError(ValueError):
    pass


@dataclass
class MacCount:
    total: int  # per image (batch 1)
    by_op: dict[str, int] = field(default_factory=dict)
    nodes_by_op: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)  # counted op types whose shapes were unknown
    uncounted_ops: dict[str, int] = field(default_factory=dict)  # op type -> node count

    def to_dict(self) -> dict:
        return {
            "per_image": self.total,
            "gmac_per_image": self.total / 1e9,
            "by_op": self.by_op,
            "nodes_by_op": self.nodes_by_op,
            "unresolved_nodes": self.unresolved,
            "uncounted_op_types": self.uncounted_ops,
            "method": "onnx shape inference at batch 1; Conv: N*Cout*prod(out spatial)*Cin/group*prod(kernel); "
                      "MatMul: prod(out shape)*K; Gemm: M*N*K; bias, element-wise, norm, pooling, Resize, "
                      "reductions not counted; 1 MAC = 2 FLOP",
        }


def _fix_batch(model, batch: int = 1) -> None:
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch


def _shapes(model) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}

    def take(vi) -> None:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]

    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        take(vi)
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def count_macs(model_or_path) -> MacCount:
    """MACs per image of an ONNX model (a path or a ModelProto; the proto is not changed)."""
    import onnx

    if isinstance(model_or_path, (str, Path)):
        try:
            model = onnx.load(str(model_or_path))
        except Exception as e:
            raise MacCountError(f"{model_or_path}: not a readable ONNX file ({type(e).__name__})") from e
    else:
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
    _fix_batch(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:
        raise MacCountError(f"onnx shape inference failed: {e}") from e
    shapes = _shapes(model)
    result = MacCount(total=0)
    for node in model.graph.node:
        op = node.op_type
        if op not in COUNTED:
            result.uncounted_ops[op] = result.uncounted_ops.get(op, 0) + 1
            continue
        macs = _node_macs(node, shapes)
        result.nodes_by_op[op] = result.nodes_by_op.get(op, 0) + 1
        if macs is None:
            result.unresolved.append(f"{op} {node.name or '(unnamed)'}")
            continue
        result.by_op[op] = result.by_op.get(op, 0) + macs
        result.total += macs
    return result


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def _node_macs(node, shapes) -> int | None:
    op = node.op_type
    out = shapes.get(node.output[0])
    if op in _WEIGHT_INPUT:
        w = shapes.get(node.input[_WEIGHT_INPUT[op]])
        if not _known(w):
            return None
        if op == "ConvTranspose":
            x = shapes.get(node.input[0])
            if not _known(x):
                return None
            # W: [C_in, C_out/group, k...]; every input pixel scatters into C_out/group x k outputs.
            return x[0] * x[1] * prod(x[2:]) * w[1] * prod(w[2:])
        if not _known(out):
            return None
        # W: [C_out, C_in/group, k...]: the group count is already in W's second dimension.
        return out[0] * out[1] * prod(out[2:]) * w[1] * prod(w[2:])
    ia, ib = _MATMUL_INPUTS[op]
    a, b = shapes.get(node.input[ia]), shapes.get(node.input[ib])
    if op == "Gemm":
        if not (_known(a) and _known(b)) or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * n * k
    if not (_known(a) and _known(out)):
        return None
    k = a[-1] if len(a) > 0 else 1
    return prod(out) * k if out else k

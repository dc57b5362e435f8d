"""What reads the uint8 graph input, computed from the ONNX dataflow alone (independently of
ffrt.tensorrt.compat): TensorRT takes a UINT8 network input only into a Cast."""

from __future__ import annotations

import onnx
from onnx import TensorProto


def uint8_input_readers(path) -> dict[str, set[str]]:
    """{uint8 graph input name: op types of the nodes that read it}."""
    model = onnx.load(str(path))
    inputs = {v.name for v in model.graph.input if v.type.tensor_type.elem_type == TensorProto.UINT8}
    readers: dict[str, set[str]] = {name: set() for name in inputs}
    for node in model.graph.node:
        for t in node.input:
            if t in readers:
                readers[t].add(node.op_type)
    return readers


def assert_uint8_only_into_cast(path) -> None:
    readers = uint8_input_readers(path)
    assert readers, f"{path}: no uint8 graph input"
    for name, ops in readers.items():
        assert ops == {"Cast"}, f"{path}: uint8 input {name!r} is read by {sorted(ops)}, TensorRT needs Cast only"

"""The ONNX operators the TensorRT 10 ONNX parser builds, and the input types of each.

The table (``onnx_ops.json`` beside this file) is transcribed from onnx-tensorrt's support
matrix, docs/operators.md of the "ONNX-TensorRT 10.1 GA release" (github.com/onnx/onnx-tensorrt,
commit 96e781103cfc4adf4a6bb557e94bac8e693f6f4c, Apache-2.0), the newest revision of that table
read for this project; the parser of later 10.x releases supports at least these. Its notes
that matter here: "UINT8 is only supported as network input or output tensor types"; INT8,
INT4 and FP8 only through quantization from a wider float type. The restrictions column is
checked where ffrt.tensorrt.compat names it; the rest is kept for messages.
"""

from __future__ import annotations

import json
from pathlib import Path

_TABLE = json.loads((Path(__file__).with_name("onnx_ops.json")).read_text())

#: op type -> (input types the parser accepts, restrictions as the table states them)
SUPPORTED: dict[str, tuple[tuple[str, ...], str]] = {
    op: (tuple(row["types"]), row["restrictions"]) for op, row in _TABLE["supported"].items()
}
#: op types the table lists as not supported
UNSUPPORTED: frozenset[str] = frozenset(_TABLE["unsupported"])
SOURCE: str = _TABLE["source"]

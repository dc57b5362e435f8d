"""TensorRT limits that decide how a graph is written, shared by the trainer's head (which
writes the graph) and ffrt's compatibility check (which reads it).

* **TopK: K < 3840.** onnx-tensorrt's operator matrix (docs/operators.md, 10.x: "K input must be
  less than 3840") and the ``add_topk`` / ``ITopKLayer`` docstrings of the TensorRT 10.16 and 11.4
  bindings ("values of K up to 3840") disagree by one; the stricter reading holds until a source
  settles it, so the largest K a graph may carry is 3839.
"""

#: The largest TopK K any ffrt graph carries (the stricter of the two TensorRT sources).
TOPK_MAX_K = 3839

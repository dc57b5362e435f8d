"""Everything TensorRT, in one package; importing it imports none of its modules (nor tensorrt).

- ``compat``: can TensorRT 10 build this ONNX graph (decided on the graph, no GPU); its operator
  table in ``onnx_ops``
- ``plan``: a plan's sidecar (TensorRT version, GPU, graph hash, batch profile, metadata), its
  cache key and the checks before a plan runs
- ``build``: importing TensorRT, the GPU's identity, building a plan, the engine cache
- ``calls``: every TensorRT API call ffrt makes (the process's one logger, timing cache)
- ``runner``: the native backend (``backend="tensorrt"``): execution-context slots, run, close
- ``cudahost``: CUDA host memory, streams and copies through cuda-python (or pycuda)
- ``ort_provider``: ONNX Runtime's TensorRT provider: its options, engine-cache folders, and
  the libnvinfer it loads
- ``libprobe``: which native libraries a shared object needs, and which one was loaded
"""

"""The GPU path's plumbing under the TensorRT backend (backends/tensorrt.py): engine (plan
cache and build), engineinfo (a plan's sidecar, cache key and checks), cudahost (CUDA host
memory and streams through cuda-python or pycuda), trtcalls (every TensorRT API call),
trtcompat (whether TensorRT 10 can build an ONNX graph, decided on the graph, no GPU needed;
its operator table in trt_onnx_ops), elf (which native
libraries a wheel's shared objects need). Imports nothing of them at package import."""

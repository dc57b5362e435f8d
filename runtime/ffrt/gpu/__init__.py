"""The GPU path's plumbing under the TensorRT backend (backends/tensorrt.py): engine (plan
cache and build), engineinfo (a plan's sidecar, cache key and checks), cudahost (CUDA host
memory and streams through cuda-python or pycuda), trtcalls (every TensorRT API call),
trtlimits (TensorRT's limits checked on the ONNX graph, no GPU needed), elf (which native
libraries a wheel's shared objects need). Imports nothing of them at package import."""

"""Inference backends. Importing this package registers the ones in this build.

Each backend module (the TensorRT one lives in ffrt.tensorrt.runner) imports its heavy dependency (onnxruntime, tensorrt) only when it is
probed or built, so registering costs nothing.
"""

from . import onnxruntime as _onnxruntime  # noqa: F401  (registers onnxruntime-tensorrt/-cuda/-cpu)
from ..tensorrt import runner as _tensorrt_runner  # noqa: F401  (registers tensorrt; imports tensorrt/CUDA only when used)
from . import openvino as _openvino  # noqa: F401  (registers openvino; imports openvino only when used)
from .base import AUTO_ORDER, Backend, BackendSpec, auto_order, availability, backend_names, create_backend, register_backend

__all__ = ["AUTO_ORDER", "Backend", "BackendSpec", "auto_order", "availability", "backend_names", "create_backend", "register_backend"]

"""Inference backends. Importing this package registers the ones in this build.

Each backend module imports its heavy dependency (onnxruntime, tensorrt) only when it is
probed or built, so registering costs nothing.
"""

from . import onnxruntime as _onnxruntime  # noqa: F401  (registers onnxruntime-tensorrt/-cuda/-cpu)
from . import tensorrt as _tensorrt  # noqa: F401  (registers tensorrt; imports tensorrt/pycuda only when used)
from . import openvino as _openvino  # noqa: F401  (registers openvino; imports openvino only when used)
from .base import AUTO_ORDER, Backend, BackendSpec, auto_order, availability, backend_names, create_backend, register_backend

__all__ = ["AUTO_ORDER", "Backend", "BackendSpec", "auto_order", "availability", "backend_names", "create_backend", "register_backend"]

"""Where each backend computes (:class:`BackendKind`), and which files suit which kind.

Decisions that depend on the kind of device (a CPU or an NVIDIA GPU; ONNX Runtime's CUDA
provider or TensorRT) look the kind up here instead of reading it from the backend's name.
"""

from __future__ import annotations

from enum import StrEnum


class BackendKind(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"  # CUDA kernels without TensorRT (ONNX Runtime's CUDA provider)
    TENSORRT = "tensorrt"  # a TensorRT engine (native, or ONNX Runtime's TensorRT provider)


#: The kind of every backend this build knows by name.
KINDS: dict[str, BackendKind] = {
    "tensorrt": BackendKind.TENSORRT,
    "onnxruntime-tensorrt": BackendKind.TENSORRT,
    "onnxruntime-cuda": BackendKind.CUDA,
    "onnxruntime-cpu": BackendKind.CPU,
    "openvino": BackendKind.CPU,
}


def backend_kind(name: str) -> BackendKind | None:
    """The kind of backend ``name``; None for one this table does not know (e.g. the Triton
    model's BLS backend, whose graph runs wherever ffrt_model's instances do)."""
    return KINDS.get(name)


def target_matches(target: str, backend_name: str) -> bool:
    """Whether a file encoded for ``target`` ("any", "cpu", "tensorrt") suits ``backend_name``.

    "cpu" files (U8S8 Q/DQ) are meant for the CPU backends; "tensorrt" files (symmetric S8S8
    Q/DQ) for TensorRT (native or ONNX Runtime's TensorRT provider): on an x86 CPU the
    symmetric encoding runs slower than FP32.
    """
    if target == "cpu":
        return backend_kind(backend_name) is BackendKind.CPU
    if target == "tensorrt":
        return backend_kind(backend_name) is BackendKind.TENSORRT
    return True

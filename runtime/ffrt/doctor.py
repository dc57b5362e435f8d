"""``ffrt doctor``: what this machine has for the GPU path, and which backends can run, in one screen.

Every line is found out here, not assumed: the driver and GPUs through the CUDA host API
(cuda-python or pycuda), the TensorRT bindings by importing them and starting a
``trt.Runtime`` on the GPU, the libnvinfer ONNX Runtime's TensorRT provider links and
loads (from the provider's ELF header), the pip-installed CUDA libraries by their package
metadata. Nothing is built or run.
"""

from __future__ import annotations

import contextlib
import platform
import sys

from ffcore.versions import package_version

from . import __version__

CUDA_WHEELS = ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-cudnn-cu13", "nvidia-cufft", "nvidia-curand",
               "tensorrt-cu13-libs", "tensorrt-cu13-bindings", "tensorrt-cu12-libs", "tensorrt-cu12-bindings")


def _one_line(text) -> str:
    return " ".join(str(text).split())


def facts(device: int = 0) -> list[tuple[str, str]]:
    """(label, value) rows describing this machine's GPU stack."""
    from .tensorrt.cudahost import CudaError, host_api, installed, preferred

    rows: list[tuple[str, str]] = [
        ("ffrt", f"{__version__} (Python {platform.python_version()}, {platform.system()} {platform.machine()})"),
    ]
    pkgs = installed()
    order = preferred()
    rows.append(("CUDA host API", ", ".join(
        f"{n} {pkgs[n]}" + (" (used)" if n == order[0] else "") if pkgs[n] else f"{n} not installed" for n in order)))
    api = None
    try:
        api = host_api()
        rows.append(("NVIDIA driver", f"supports CUDA {api.driver_version()} (via {api.name})"))
    except CudaError as e:
        rows.append(("NVIDIA driver", f"not usable: {_one_line(e)}"))
    if api is not None:
        try:
            count = api.device_count()
            gpus = []
            for i in range(count):
                d = api.device(i)
                gpus.append(f"{i}: {d.name} (sm{d.compute_capability.replace('.', '')}, {d.total_memory / 2**30:.1f} GiB)")
            rows.append(("GPUs", "; ".join(gpus) if gpus else "none"))
        except CudaError as e:
            rows.append(("GPUs", f"not listed: {_one_line(e)}"))
    wheels = [f"{d} {v}" for d in CUDA_WHEELS if (v := package_version(d))]
    rows.append(("CUDA libraries (pip)", ", ".join(wheels) if wheels else "none from pip (system libraries or none)"))
    rows.append(("TensorRT (Python)", _tensorrt_row(api, device)))
    rows.append(("onnxruntime", _ort_row()))
    return rows


def _tensorrt_row(api, device: int) -> str:
    from .tensorrt import libprobe, calls
    from .tensorrt.cudahost import CudaError
    from .tensorrt.build import import_tensorrt
    from .errors import BackendUnavailableError

    try:
        trt = import_tensorrt()
    except BackendUnavailableError as e:
        return _one_line(e)
    version = str(trt.__version__)
    major = version.split(".")[0]
    lib = libprobe.loaded_path(f"libnvinfer.so.{major}")
    text = f"{version}, libnvinfer.so.{major} from {lib or 'an unknown path'}"
    if api is None:
        return text + "; not started (no usable driver)"
    try:
        ctx = api.open(device)
    except CudaError as e:
        return text + f"; GPU {device} not usable: {_one_line(e)}"
    try:
        with ctx.active():
            logger = calls.make_logger(trt)
            try:
                runtime = calls.create(trt, "Runtime", logger, device)
                del runtime
                text += f"; starts on GPU {device}"
            except BackendUnavailableError as e:
                text += f"; does NOT start: {_one_line(e)}"
    except CudaError as e:
        text += f"; GPU {device} not usable: {_one_line(e)}"
    finally:
        with contextlib.suppress(CudaError):
            ctx.release()
    return text


def _ort_row() -> str:
    try:
        import onnxruntime as ort
    except ImportError:
        return 'not installed (pip install "ffrt[cpu]" or "ffrt[gpu]")'
    from .tensorrt.ort_provider import ort_trt_library

    dist = next((d for d in ("onnxruntime-gpu", "onnxruntime") if package_version(d)), "onnxruntime")
    text = f"{dist} {ort.__version__}, providers {', '.join(ort.get_available_providers())}"
    lib = ort_trt_library(ort)
    if lib["soname"]:
        text += f"; its TensorRT provider links {lib['soname']}: " + (
            f"TensorRT {lib['version']} from {lib['path'] or 'an unknown path'}" if lib["version"] else "NOT FOUND")
    return text


def report(device: int = 0) -> str:
    from .backends import availability

    rows = facts(device)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("")
    lines.append("backends (in the order backend='auto' tries them):")
    for name, reason in availability().items():
        lines.append(f"  {name:<22} {'available' if reason is None else 'unavailable: ' + _one_line(reason)}")
    return "\n".join(lines)


def model_report(path) -> tuple[str, bool]:
    """(text, ok): whether TensorRT 10 can build the ONNX graph at ``path``, every finding on its own line."""
    from .errors import ModelFileError
    from .tensorrt import compat

    try:
        found = compat.check(path)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read the file ({e.strerror or e}); check the path") from e
    except Exception as e:  # onnx raises protobuf's DecodeError and others on a file that is not ONNX
        raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__}: {_one_line(e)}); pass the "
                             ".onnx file ffexport wrote") from e
    if not found:
        return (f"TensorRT 10 check of {path}: OK (operators and types of the TensorRT 10 ONNX parser, uint8 only "
                "into Cast, TopK K, dynamic dimensions)"), True
    lines = [f"TensorRT 10 check of {path}: TensorRT cannot build it ({len(found)} findings):"]
    lines += [f"  {f}" for f in found]
    return "\n".join(lines), False


def main() -> int:  # pragma: no cover - `ffrt doctor` is the entry point
    print(report())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

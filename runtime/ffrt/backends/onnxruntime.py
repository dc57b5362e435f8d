"""ONNX Runtime backends: "onnxruntime-tensorrt" (TensorRT EP), "onnxruntime-cuda" (CUDA EP), "onnxruntime-cpu".

The only module of ffrt that imports ``onnxruntime``, and only when a backend is probed or
built, so ``import ffrt`` works (and ``ffrt info`` runs) on a machine without it.

Thread-safety: ``InferenceSession.run`` may be called from several threads at once (ONNX
Runtime documents this), so one backend serves all threads of a Detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ffcore.ort import make_session, physical_core_count

from ..errors import BackendUnavailableError, ModelFileError
from ..meta import ModelMeta
from .base import Backend, BackendSpec, check_threads, import_library, register_backend
from .contract import Port, check_contract

CPU_HINT = 'pip install "ffrt[cpu]"'
GPU_HINT = 'pip install "ffrt[gpu]" (onnxruntime-gpu, with a CUDA/cuDNN that matches it)'


def _import_ort():
    return import_library("onnxruntime", "onnxruntime", CPU_HINT)


class OnnxRuntimeBackend(Backend):
    def __init__(self, name: str, model_path: Path, meta: ModelMeta, providers: list, threads: int | None):
        _import_ort()
        check_threads(threads)
        self.name = name
        # The file runs as written: ORT's CPU kernels compute FP32 (Q/DQ convolutions in INT8).
        self.precision = meta.precision
        # None -> 0 = ONNX Runtime's default (physical cores) where we cannot count them.
        self.threads = threads if threads is not None else physical_core_count()

        try:
            self._session = make_session(model_path, self.threads or 0, providers, quiet=False)
        except Exception as e:
            if name in ("onnxruntime-cuda", "onnxruntime-tensorrt"):
                # Most often missing/mismatched CUDA, cuDNN or TensorRT libraries, not a bad
                # model; "auto" falls back to the CPU, which reports a bad model precisely.
                what = "TensorRT" if name == "onnxruntime-tensorrt" else "CUDA"
                raise BackendUnavailableError(f"ONNX Runtime could not start the {what} session ({e}); {GPU_HINT}") from e
            raise ModelFileError(f"{model_path}: ONNX Runtime cannot load this model: {e}") from e

        self._providers = tuple(self._session.get_providers())
        if name == "onnxruntime-tensorrt" and self._providers[:1] != ("TensorrtExecutionProvider",):
            raise BackendUnavailableError(
                "the TensorRT execution provider failed to initialise (ONNX Runtime fell back to "
                f"{', '.join(self._providers)}; usually libnvinfer is missing or of another major version); {GPU_HINT}"
            )
        if name == "onnxruntime-cuda" and self._providers[:1] != ("CUDAExecutionProvider",):
            # ORT silently falls back to the CPU when the CUDA EP fails to initialise.
            raise BackendUnavailableError(
                "the CUDA execution provider failed to initialise (ONNX Runtime fell back to "
                f"{', '.join(self._providers)}; see its log for the missing library); {GPU_HINT}"
            )
        self._input, self._map, self._score = check_contract(
            [Port(i.name, i.type, i.shape) for i in self._session.get_inputs()],
            [Port(o.name, o.type, o.shape) for o in self._session.get_outputs()], meta, model_path)
        self._outputs = [self._map, self._score]

    @property
    def providers(self) -> tuple[str, ...]:
        return self._providers

    @property
    def description(self) -> str:
        threads = ""
        if self.name == "onnxruntime-cpu":
            threads = f", {self.threads} threads" if self.threads else ", default threads"
        return f"{self.name} ({', '.join(self._providers)}{threads})"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        session = self._session
        if session is None:
            from ..errors import InferenceError

            raise InferenceError(f"this {self.name} backend is closed; create a new Detector")
        maps, scores = session.run(self._outputs, {self._input: batch})
        return maps, scores

    def close(self) -> None:
        self._session = None  # ONNX Runtime frees the session (and its GPU memory) with it


def _probe_cpu() -> str | None:
    try:
        _import_ort()
    except BackendUnavailableError as e:
        return str(e)
    return None


def _missing_provider(provider: str) -> str | None:
    """Why ``provider`` cannot be used by the installed onnxruntime, or None."""
    try:
        ort = _import_ort()
    except BackendUnavailableError:
        return f"onnxruntime-gpu is not installed; {GPU_HINT}"
    available = ort.get_available_providers()
    if provider not in available:
        return f"this onnxruntime has no {provider} (it has {', '.join(available)}); {GPU_HINT}"
    return None


def _probe_cuda() -> str | None:
    return _missing_provider("CUDAExecutionProvider")


_GPU_LIBS_PREPARED: dict[str, str] = {}


def prepare_gpu_libraries(ort=None) -> str:
    """Make the CUDA/cuDNN/TensorRT libraries of the gpu extra's wheels findable by ONNX
    Runtime's CUDA and TensorRT providers (once per process); returns what was said.

    * ``onnxruntime.preload_dlls()`` (onnxruntime-gpu >= 1.21) loads CUDA and cuDNN from the
      nvidia-* wheels; without it they are found only if torch was imported first. It prints
      to stdout on failure: that text is captured and logged instead.
    * ``import tensorrt_libs`` (the tensorrt-cu13-libs wheel) loads libnvinfer.so.10 etc.; the
      TensorRT provider's NEEDED entries then resolve to them.
    """
    import contextlib
    import io

    if "done" in _GPU_LIBS_PREPARED:
        return _GPU_LIBS_PREPARED["done"]
    ort = ort or _import_ort()
    said = []
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                preload()
        except Exception as e:  # noqa: BLE001 - a missing library is reported by the session
            said.append(f"preload_dlls: {e}")
        text = " ".join(buf.getvalue().split())
        if text:
            said.append(f"preload_dlls: {text}")
    try:
        import tensorrt_libs  # noqa: F401, PLC0415
    except Exception:  # noqa: BLE001 - not installed: system libnvinfer or none
        pass
    _GPU_LIBS_PREPARED["done"] = "; ".join(said)
    if said:
        import logging

        logging.getLogger("ffrt").info("ffrt: %s", "; ".join(said))
    return _GPU_LIBS_PREPARED["done"]


def _probe_trt_ep() -> str | None:
    missing = _missing_provider("TensorrtExecutionProvider")
    if missing is not None:
        return missing
    from ..tensorrt.ort_provider import ort_trt_library

    lib = ort_trt_library()
    if lib["soname"] and lib["version"] is None:
        from ..tensorrt.build import tensorrt_version

        python_trt = tensorrt_version()
        also = f" (the Python tensorrt here is {python_trt}, whose libraries are another major)" if python_trt and \
            not python_trt.startswith(lib["soname"].rsplit(".", 1)[-1] + ".") else ""
        return (f"this onnxruntime's TensorRT provider links {lib['soname']}, which is not found{also}; {GPU_HINT}")
    if lib["version"] is None:
        return f"no TensorRT library (libnvinfer) found for the TensorRT execution provider; {GPU_HINT}"
    from ..tensorrt.build import gpu_info

    if gpu_info() is None:
        return "no NVIDIA GPU is visible (the NVIDIA driver reports no device)"
    return None


def _create_trt_ep(path: Path, meta: ModelMeta, threads: int | None, device: int = 0, **_) -> "OnnxRuntimeBackend":
    import json

    from ..tensorrt.ort_provider import prune_ort_trt_folders, trt_ep_options

    prepare_gpu_libraries()
    options, folder = trt_ep_options(path, meta, device=device)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ffrt-key.json").write_text(
        json.dumps({"onnx": str(Path(path).resolve()), "options": options}, indent=2, default=str))
    prune_ort_trt_folders(folder, path)
    return OnnxRuntimeBackend(
        "onnxruntime-tensorrt", path, meta,
        [("TensorrtExecutionProvider", options), ("CUDAExecutionProvider", cuda_ep_options(device)),
         "CPUExecutionProvider"], threads,
    )


def cuda_ep_options(device: int = 0) -> dict:
    """CUDA EP options: the GPU, and TF32 off (``use_tf32``, on by default in the CUDA EP):
    FP32 tensors of the ONNX stay FP32, as in the native TensorRT engines."""
    return {"device_id": device, "use_tf32": 0}


def _create_cuda_ep(path: Path, meta: ModelMeta, threads: int | None, device: int = 0, **_) -> "OnnxRuntimeBackend":
    prepare_gpu_libraries()
    # CPU EP listed second: nodes CUDA lacks a kernel for still run.
    return OnnxRuntimeBackend("onnxruntime-cuda", path, meta,
                              [("CUDAExecutionProvider", cuda_ep_options(device)), "CPUExecutionProvider"], threads)


register_backend(
    BackendSpec(
        name="onnxruntime-tensorrt",
        probe=_probe_trt_ep,
        create=_create_trt_ep,
    )
)
register_backend(
    BackendSpec(
        name="onnxruntime-cuda",
        probe=_probe_cuda,
        create=_create_cuda_ep,
    )
)
register_backend(
    BackendSpec(
        name="onnxruntime-cpu",
        probe=_probe_cpu,
        create=lambda path, meta, threads, device=0, **_: OnnxRuntimeBackend(
            "onnxruntime-cpu", path, meta, ["CPUExecutionProvider"], threads
        ),
    )
)

"""The one interface every inference backend implements, the registry, and ``"auto"``.

A backend only runs the fused graph: uint8 NHWC RGB batch in, (anomaly maps, scores) out.
Decoding, resizing, thresholds and timing live in the Detector, so every backend behaves
the same and a new one (native TensorRT) is a single file that registers itself.

``backend="auto"`` walks :data:`AUTO_ORDER` (fastest first) and takes the first backend
that is present in this build, available on this machine and actually starts; it logs
(logger ``ffrt``) which one it chose and why each faster one was skipped.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError
from ..meta import ModelMeta

log = logging.getLogger("ffrt")

#: Fastest first. Names missing from the registry are skipped by "auto" ("not in this
#: build"), so the TensorRT backends slot in by registering, without touching this logic.
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu")

class Backend(abc.ABC):
    """Runs the fused graph on a uint8 NHWC RGB batch."""

    #: Registry name, e.g. "onnxruntime-cpu". ``run`` must be safe to call from several
    #: threads at once: the Detector does not serialize calls.
    name: str = ""

    @property
    @abc.abstractmethod
    def providers(self) -> tuple[str, ...]:
        """The execution providers / engines actually in use (for logs and reports)."""

    @property
    def description(self) -> str:
        return f"{self.name} ({', '.join(self.providers)})"

    @abc.abstractmethod
    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``batch``: uint8 [N, H, W, 3] RGB, C-contiguous, at the model size.

        Returns (anomaly maps float32 [N, 1, H, W], scores float32 [N]).
        """

    def close(self) -> None:
        """Release what the backend holds (GPU memory, sessions). Idempotent; later
        ``run`` calls may fail. The default holds nothing that needs it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class BackendSpec:
    name: str
    #: None when the backend can run here, else a sentence saying why not and what to install.
    probe: Callable[[], str | None]
    #: Builds the backend: (model path, metadata, CPU threads, GPU index). Raises
    #: BackendUnavailableError when the machine turns out not to support it after all (e.g.
    #: CUDA libraries missing, TensorRT cannot initialise CUDA); "auto" then moves on. Any
    #: other error (ModelFileError: the model breaks the contract) is not hidden by "auto".
    create: Callable[[Path, ModelMeta, int | None, int], Backend]


_REGISTRY: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    _REGISTRY[spec.name] = spec


def backend_names() -> tuple[str, ...]:
    """Every name ``backend=`` accepts in this build, "auto" first."""
    return ("auto",) + tuple(n for n in AUTO_ORDER if n in _REGISTRY) + tuple(
        sorted(n for n in _REGISTRY if n not in AUTO_ORDER)
    )


def availability() -> dict[str, str | None]:
    """For every name in AUTO_ORDER and the registry: None if usable here, else why not."""
    out: dict[str, str | None] = {}
    for name in AUTO_ORDER + tuple(n for n in _REGISTRY if n not in AUTO_ORDER):
        spec = _REGISTRY.get(name)
        out[name] = spec.probe() if spec else "not in this build"
    return out


def create_backend(
    requested: str, model_path: Path, meta: ModelMeta, threads: int | None = None, device: int = 0
) -> tuple[Backend, tuple[str, ...]]:
    """Build the requested backend (or pick one for "auto").

    Returns the backend and, for "auto", one line per faster backend that was skipped and
    why (empty for an explicit choice).
    """
    name = str(requested).strip().lower()
    if name == "auto":
        return _auto(model_path, meta, threads, device)

    spec = _REGISTRY.get(name)
    if spec is None:
        raise BackendUnavailableError(
            f"unknown backend {requested!r}; choose one of: {', '.join(backend_names())}."
        )
    reason = spec.probe()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available here: {reason}.")
    backend = spec.create(model_path, meta, threads, device)
    log.info("ffrt backend: %s", backend.description)
    return backend, ()


def auto_order(meta: ModelMeta) -> tuple[str, ...]:
    """The order "auto" tries backends in for this model: fastest first, except that a file
    encoded for the CPU (``target="cpu"``: INT8 U8S8 Q/DQ) goes to the CPU backend first.
    TensorRT would run that encoding slower than the file made for it, and trying it first
    costs an engine build on a GPU host."""
    if meta.target == "cpu":
        return ("onnxruntime-cpu",) + tuple(n for n in AUTO_ORDER if n != "onnxruntime-cpu")
    return AUTO_ORDER


def _auto(model_path: Path, meta: ModelMeta, threads: int | None, device: int) -> tuple[Backend, tuple[str, ...]]:
    skipped: list[str] = []
    for name in auto_order(meta):
        spec = _REGISTRY.get(name)
        if spec is None:
            skipped.append(f"{name}: not in this build")
            continue
        reason = spec.probe()
        if reason is not None:
            skipped.append(f"{name}: {reason}")
            continue
        try:
            backend = spec.create(model_path, meta, threads, device)
        except BackendUnavailableError as e:
            skipped.append(f"{name}: {e}")
            continue
        log.info(
            "ffrt backend auto: chose %s%s",
            backend.description,
            "".join(f"\n  skipped {s}" for s in skipped),
        )
        return backend, tuple(skipped)
    raise BackendUnavailableError(
        "no inference backend can run here (" + "; ".join(skipped) + '). For CPU inference: pip install "ffrt[cpu]".'
    )

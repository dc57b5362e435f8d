"""The one interface every inference backend implements, the registry, and ``"auto"``.

A backend only runs the fused graph: uint8 NHWC RGB batch in, (anomaly maps, scores) out.
Decoding, resizing, thresholds and timing live in the Detector, so every backend behaves
the same and a new one (native TensorRT) is a single file that registers itself.

``backend="auto"`` walks :data:`AUTO_ORDER` (fastest first) and takes the first backend
that is present in this build, available on this machine and actually starts; it logs
(logger ``ffrt``) which one it chose and why each faster one was skipped. The CPU backends
(OpenVINO, ONNX Runtime CPU) are not ranked by a fixed order: when more than one starts, the
faster on this model and machine is measured once and remembered (:mod:`.cpuchoice`).

``precision``: the floating-point precision a backend computes in where it chooses at run
time ("fp32", "bf16"; "auto" = the backend decides and says what it ran). Parts a file
encodes itself (INT8 Q/DQ, FP16 weights) run as encoded.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import BackendUnavailableError, InvalidArgumentError
from ..meta import ModelMeta
from .kinds import BackendKind, backend_kind

if TYPE_CHECKING:
    from .variants import Variant

log = logging.getLogger("ffrt")

#: Fastest first. Names missing from the registry are skipped by "auto" ("not in this
#: build"), so the TensorRT backends slot in by registering, without touching this logic.
#: The CPU backends come last, ONNX Runtime first: among them "auto" keeps the first unless
#: another is measured faster here (see CPU_BACKENDS).
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "openvino")

class Precision(StrEnum):
    """The float precision a caller may ask the CPU compute for (what actually ran is the
    backend's ``precision``: INT8/FP16 parts of a file run as encoded)."""

    AUTO = "auto"  # FP32, or BF16 where the file carries a passed BF16 gate and the CPU has native BF16
    FP32 = "fp32"
    BF16 = "bf16"  # OpenVINO on a CPU with AMX or AVX512-BF16; the anomaly head stays FP32


#: What ``precision=`` accepts.
PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)

class Backend(abc.ABC):
    """Runs the fused graph on a uint8 NHWC RGB batch."""

    #: Registry name, e.g. "onnxruntime-cpu". ``run`` must be safe to call from several
    #: threads at once: the Detector does not serialize calls.
    name: str = ""
    #: The precision this backend computes in: "fp32", "bf16", or the file's own encoding
    #: ("fp16", "int8"; "int8+bf16" where the float parts of an INT8 file run in BF16).
    precision: str = "fp32"
    #: One line: which parts ran in which precision and why this one (set by the backend).
    precision_detail: str = ""
    #: For backend="auto" on the CPU: how this backend was chosen over the other CPU backends.
    choice: str = ""
    #: The file it runs when "auto" chose a precision variant of the requested one
    #: (``backends/variants.py``) with that file's metadata; None: the requested file.
    variant: "Variant | None" = None
    #: What "auto" started it as (backend, file, precision asked); None for an explicit backend.
    candidate: "Candidate | None" = None

    @property
    def label(self) -> str:
        """The backend's name, and the variant file it runs with its precision if any (names
        "auto"'s candidates: one file may run in two precisions on one backend)."""
        return self.name if self.variant is None else f"{self.name} {self.precision} on {self.variant.path.name}"

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

    def run_chunks(self, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``run`` on each batch, in order. A backend that can overlap batches (OpenVINO's
        asynchronous infer requests) overrides this; predict_batch calls it."""
        return [self.run(b) for b in batches]

    def close(self) -> None:
        """Release what the backend holds (GPU memory, sessions). Idempotent; later
        ``run`` calls may fail. The default holds nothing that needs it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def import_library(module: str, what: str, hint: str):
    """``import module``, or a BackendUnavailableError saying what to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackendUnavailableError(f"{what} is not installed ({e}); install it: {hint}") from e


def check_threads(threads: object) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InvalidArgumentError(f"threads must be a positive integer or None (all physical cores), not {threads!r}.")


def fp32_only(precision: str) -> str | None:
    """``BackendSpec.precision_problem`` of a backend that runs the file as written."""
    if precision in ("auto", "fp32"):
        return None
    return "it runs the file as written, in FP32 (BF16 on the CPU: backend=\"openvino\" on a CPU with AMX or AVX512-BF16)"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    #: None when the backend can run here, else a sentence saying why not and what to install.
    probe: Callable[[], str | None]
    #: Builds the backend: (model path, metadata, CPU threads, GPU index, precision=..., options=...);
    #: a backend without options or precisions of its own ignores the last two. Raises BackendUnavailableError
    #: when the machine turns out not to support it after all (e.g. CUDA libraries missing,
    #: TensorRT cannot initialise CUDA); "auto" then moves on. Any other error (ModelFileError:
    #: the model breaks the contract) is not hidden.
    create: Callable[..., Backend]
    #: None when ``precision=`` may name this precision here, else why not.
    precision_problem: Callable[[str], str | None] = fp32_only
    #: The keys of ``backend_options`` this backend takes.
    option_keys: tuple[str, ...] = ()


_REGISTRY: dict[str, BackendSpec] = {}


def _create(spec: BackendSpec, model_path, meta, threads, device, precision: str, options: dict) -> Backend:
    return spec.create(model_path, meta, threads, device, precision=precision, options=options)


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
    requested: str, model_path: Path, meta: ModelMeta, threads: int | None = None, device: int = 0,
    precision: str = "auto", options: Mapping | None = None,
) -> tuple[Backend, tuple[str, ...]]:
    """Build the requested backend (or pick one for "auto").

    Returns the backend and, for "auto", one line per backend that was skipped or measured
    and why (empty for an explicit choice).
    """
    name = str(requested).strip().lower()
    precision = check_precision(precision).value
    options = dict(options or {})
    if name == "auto":
        return _auto(model_path, meta, threads, device, precision, options)

    spec = _REGISTRY.get(name)
    if spec is None:
        raise BackendUnavailableError(
            f"unknown backend {requested!r}; choose one of: {', '.join(backend_names())}."
        )
    _check_options(spec, options)
    reason = spec.probe()
    if reason is not None:
        raise BackendUnavailableError(f"backend {name!r} is not available here: {reason}.")
    problem = spec.precision_problem(precision)
    if problem is not None:
        raise BackendUnavailableError(f"backend {name!r} cannot run precision={precision!r}: {problem}.")
    backend = _create(spec, model_path, meta, threads, device, precision, options)
    log.info("ffrt backend: %s", backend.description)
    return backend, ()


def precision_problem(name: str, precision: str) -> str | None:
    """None when backend ``name`` can run ``precision`` here (as far as its probe tells), else why not."""
    spec = _REGISTRY.get(name)
    if spec is None:
        return "not in this build"
    return spec.probe() or spec.precision_problem(precision)


def check_precision(precision: object) -> Precision:
    value = str(precision).strip().lower() if isinstance(precision, str) else None
    if value not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, not {precision!r}.")
    return Precision(value)


def _check_options(spec: BackendSpec, options: dict) -> None:
    unknown = sorted(set(options) - set(spec.option_keys))
    if unknown:
        takes = f"it takes {', '.join(spec.option_keys)}" if spec.option_keys else "it takes none"
        raise InvalidArgumentError(f"backend {spec.name!r} has no option {', '.join(map(repr, unknown))} ({takes}).")


def auto_order(meta: ModelMeta) -> tuple[str, ...]:
    """The order "auto" tries backends in for this model: fastest first, except that a file
    encoded for the CPU (``target="cpu"``: INT8 U8S8 Q/DQ) goes to the CPU backends first.
    TensorRT would run that encoding slower than the file made for it, and trying it first
    costs an engine build on a GPU host."""
    if meta.target == "cpu":
        cpu = tuple(n for n in AUTO_ORDER if n in CPU_BACKENDS)
        return cpu + tuple(n for n in AUTO_ORDER if n not in cpu)
    return AUTO_ORDER


#: The CPU backends of AUTO_ORDER ("auto" measures these against each other).
CPU_BACKENDS: tuple[str, ...] = tuple(n for n in AUTO_ORDER if backend_kind(n) is BackendKind.CPU)


def _cannot_start(name: str, precision: str, options: dict) -> str | None:
    """Why backend ``name`` cannot be started here with ``precision`` and ``options``, or None
    (what can be told without starting it)."""
    spec = _REGISTRY.get(name)
    if spec is None:
        return "not in this build"
    if set(options) - set(spec.option_keys):
        return f"does not take backend_options {', '.join(sorted(set(options) - set(spec.option_keys)))}"
    return spec.probe() or spec.precision_problem(precision)


def _start(name: str, model_path, meta, threads, device, precision, options, skipped: list[str]) -> Backend | None:
    reason = _cannot_start(name, precision, options)
    if reason is not None:
        skipped.append(f"{name}: {reason}")
        return None
    try:
        return _create(_REGISTRY[name], model_path, meta, threads, device, precision, options)
    except BackendUnavailableError as e:
        skipped.append(f"{name}: {e}")
        return None


@dataclass(frozen=True)
class Candidate:
    """One configuration "auto" may run on the CPU: a backend, the file, the precision asked."""

    name: str
    path: Path
    meta: ModelMeta
    precision: str
    variant: "Variant | None" = None

    def start(self, threads, device, options: dict, skipped: list[str]) -> Backend | None:
        backend = _start(self.name, self.path, self.meta, threads, device, self.precision, options, skipped)
        if backend is not None:
            backend.variant = self.variant
        return backend


def _cpu_candidates(group: list[str], model_path: Path, meta: ModelMeta, precision: str, options: dict,
                    why_not: list[str]) -> list[Candidate]:
    """What "auto" measures, without starting anything: each backend of ``group`` on the file,
    and with ``precision="auto"`` on each gated precision variant of it (variants.py) in each
    precision the variant was gated for."""
    from .variants import gated_variants

    out = []
    for name in group:
        if (reason := _cannot_start(name, precision, options)) is None:
            out.append(Candidate(name, Path(model_path), meta, precision))
        else:
            why_not.append(f"{name}: {reason}")
    if precision != "auto":
        return out
    variants, problems = gated_variants(model_path, meta)
    why_not.extend(problems)
    for variant in variants:
        refused = []
        for name in group:
            for p in variant.precisions:
                if (reason := _cannot_start(name, p, options)) is None:
                    out.append(Candidate(name, variant.path, variant.meta, p, variant))
                else:
                    refused.append(f"{name}: {reason}")
        if not any(c.variant is variant for c in out):
            why_not.append(f"{variant.path.name} ({variant.meta.precision}) not run: " + "; ".join(refused))
    return out


def _cpu_group(candidates: list[Candidate], model_path: Path, meta: ModelMeta, threads, device, options: dict,
               why_not: list[str]) -> Backend | None:
    """The CPU backend "auto" runs, with its ``choice`` line: the remembered choice of an
    earlier measurement of these candidates on this machine (only that one is started), else
    every candidate started and measured (cpuchoice)."""
    from . import cpuchoice

    notes = "".join(f"; not {w}" for w in why_not)
    if len(candidates) > 1:
        remembered = cpuchoice.remembered(candidates, model_path, threads, options)
        if remembered is not None:
            backend = remembered.candidate.start(threads, device, options, [])
            if backend is not None and cpuchoice.label(backend) == remembered.label:
                backend.choice = remembered.line + notes
                return backend
            if backend is not None:  # it resolved to another configuration than was measured: measure again
                backend.close()
    started = []
    for candidate in candidates:
        refused: list[str] = []
        backend = candidate.start(threads, device, options, refused)
        if backend is not None:
            backend.candidate = candidate
            started.append(backend)
        else:
            why_not.extend(refused if candidate.variant is None else
                           [f"{candidate.path.name} ({candidate.precision}) on {r}" for r in refused])
    notes = "".join(f"; not {w}" for w in why_not)
    if not started:
        return None
    if len(started) == 1:
        started[0].choice = notes[2:] or "the only CPU backend in this build"
        return started[0]
    chosen, line = cpuchoice.pick(started, model_path, meta, threads, cpuchoice.plan_key(candidates, model_path,
                                                                                         threads, options))
    chosen.choice = line + notes
    return chosen


def _auto(model_path: Path, meta: ModelMeta, threads: int | None, device: int, precision: str,
          options: dict) -> tuple[Backend, tuple[str, ...]]:
    skipped: list[str] = []
    order = auto_order(meta)
    chosen = None
    for i, name in enumerate(order):
        if name not in CPU_BACKENDS:
            chosen = _start(name, model_path, meta, threads, device, precision, options, skipped)
            if chosen is not None:
                break
            continue
        # The CPU group: every CPU backend that can run here, on the file and its gated
        # precision variants, measured against each other (or the remembered choice). Why a
        # CPU backend did not start is said in ``choice`` (it was not "faster and skipped").
        group = [n for n in order[i:] if n in CPU_BACKENDS]
        why_not: list[str] = []
        candidates = _cpu_candidates(group, model_path, meta, precision, options, why_not)
        chosen = _cpu_group(candidates, model_path, meta, threads, device, options, why_not)
        if chosen is None:
            skipped.extend(why_not)
        break
    if chosen is None:
        raise BackendUnavailableError(
            "no inference backend can run here (" + "; ".join(skipped) + '). For CPU inference: pip install "ffrt[cpu]".'
        )
    log.info("ffrt backend auto: chose %s%s%s", chosen.description, f" ({chosen.choice})" if chosen.choice else "",
             "".join(f"\n  skipped {s}" for s in skipped))
    return chosen, tuple(skipped)

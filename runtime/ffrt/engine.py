"""TensorRT plans: cache key, sidecar metadata, mismatch detection, batch profile, build.

A serialized TensorRT plan only runs on the TensorRT version and the GPU architecture
it was built for, and silently describes nothing about the ONNX it came from. So every
plan ffrt writes gets a sidecar ``<plan>.json`` (:class:`EngineInfo`): TensorRT version,
GPU name and compute capability, sha256 of the source ONNX and of the plan itself, the
precision, the batch profile, and the model's full :class:`~ffrt.meta.ModelMeta`. A plan
whose sidecar is missing, or disagrees with this machine or with the ONNX it is supposed
to come from, is refused (explicit .engine) or rebuilt (engine cache), never run.

Engine cache (``Detector("model.onnx", backend="tensorrt")`` and the ONNX Runtime
TensorRT EP): key = ONNX sha256 + TensorRT version + compute capability + precision
(:class:`CacheKey`); the key's digest names the cache entry, so a different ONNX, TensorRT
or GPU simply looks up another entry, and the sidecar is re-checked on every load.

Nothing here imports torch; ``tensorrt``/``pycuda`` are imported only inside the functions
that need a GPU, so the cache and metadata logic is testable on any machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import BackendUnavailableError, EngineMismatchError, InvalidArgumentError, ModelFileError
from .meta import ModelMeta, atomic_write_bytes, readable

ENGINE_FORMAT = "ffrt.engine"
ENGINE_SCHEMA_VERSION = 1
SIDECAR_SUFFIX = ".json"
#: Where Detector(..., backend="tensorrt") keeps built plans unless told otherwise.
CACHE_ENV = "FFRT_ENGINE_CACHE"
DEFAULT_WORKSPACE_MB = 1024
INSTALL_GPU = 'pip install "ffrt[gpu]"'


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ffrt" / "engines"


# -- batch profile ------------------------------------------------------------------------


class BatchProfile(BaseModel):
    """The one optimization profile: batch sizes the plan accepts (min..max), tuned for opt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(1, ge=1)
    opt: int = Field(1, ge=1)
    max: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "BatchProfile":
        if not (self.min <= self.opt <= self.max):
            raise ValueError(f"batch sizes must satisfy min <= opt <= max (got {self.min}, {self.opt}, {self.max})")
        return self

    @classmethod
    def for_model(cls, meta: ModelMeta, min: int | None = None, opt: int | None = None, max: int | None = None) -> "BatchProfile":
        """Defaults: 1..batch_max of the ONNX (8 if unknown), opt = max(1, min(8, max))."""
        hi = max if max is not None else (meta.batch_max or 8)
        lo = min if min is not None else 1
        op = opt if opt is not None else _clamp(lo, 8, hi)  # (min/max are parameters here)
        try:
            prof = cls(min=lo, opt=op, max=hi)
        except ValidationError as e:
            raise InvalidArgumentError(f"batch profile: {e.errors()[0]['msg']}") from e
        if meta.batch_max is not None and prof.max > meta.batch_max:
            raise InvalidArgumentError(
                f"--batch-max {prof.max} exceeds the batch_max {meta.batch_max} the ONNX was exported for; "
                f"re-export with ffexport --batch-max {prof.max} or lower --batch-max"
            )
        return prof

    def shapes(self, meta: ModelMeta) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes, NHWC uint8 as the graph takes them."""
        h, w, c = meta.input.height, meta.input.width, meta.input.channels
        return (self.min, h, w, c), (self.opt, h, w, c), (self.max, h, w, c)

    def trtexec_args(self, meta: ModelMeta) -> str:
        name = meta.input.name
        mn, op, mx = ("x".join(map(str, s)) for s in self.shapes(meta))
        return f"--minShapes={name}:{mn} --optShapes={name}:{op} --maxShapes={name}:{mx}"

    def ort_profile_options(self, meta: ModelMeta) -> dict[str, str]:
        """The ONNX Runtime TensorRT EP's explicit-profile options (same profile as ours)."""
        name = meta.input.name
        mn, op, mx = ("x".join(map(str, s)) for s in self.shapes(meta))
        return {
            "trt_profile_min_shapes": f"{name}:{mn}",
            "trt_profile_opt_shapes": f"{name}:{op}",
            "trt_profile_max_shapes": f"{name}:{mx}",
        }


def _clamp(lo: int, v: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


# -- GPU / TensorRT facts of this machine ---------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"


def tensorrt_version() -> str | None:
    """Version of the importable ``tensorrt`` package, or None."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        return None
    return str(trt.__version__)


def gpu_info(device: int = 0) -> GpuInfo | None:
    """Name and compute capability of GPU ``device`` (pycuda, else nvidia-smi), or None."""
    try:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        if cuda.Device.count() > device:
            d = cuda.Device(device)
            major, minor = d.compute_capability()
            return GpuInfo(d.name(), f"{major}.{minor}")
    except Exception:  # noqa: BLE001 - no pycuda / no driver: try nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,compute_cap", "--format=csv,noheader", f"--id={device}"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    if not out or "," not in out:
        return None
    name, cc = (s.strip() for s in out.splitlines()[0].rsplit(",", 1))
    return GpuInfo(name, cc)


def missing_for_tensorrt() -> str | None:
    """None when TensorRT and a GPU are usable here, else one sentence naming what is missing."""
    if tensorrt_version() is None:
        return f"TensorRT is not installed (no importable 'tensorrt'; {INSTALL_GPU})"
    try:
        import pycuda.driver  # noqa: F401, PLC0415
    except ImportError:
        return f"pycuda is not installed ({INSTALL_GPU})"
    if gpu_info() is None:
        return "no NVIDIA GPU is visible (CUDA driver/nvidia-smi found no device)"
    return None


# -- cache key ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheKey:
    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    precision: str

    def digest(self) -> str:
        text = json.dumps(
            [self.onnx_sha256, self.tensorrt_version, self.compute_capability, self.precision], separators=(",", ":")
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def filename(self, stem: str = "model") -> str:
        cc = self.compute_capability.replace(".", "")
        return f"{stem}.{self.precision}.trt{self.tensorrt_version}.sm{cc}.{self.digest()}.engine"


# -- sidecar ------------------------------------------------------------------------------


class EngineInfo(BaseModel):
    """What a plan was built from and for. Stored as ``<plan>.json`` next to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["ffrt.engine"] = ENGINE_FORMAT
    schema_version: int = ENGINE_SCHEMA_VERSION
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    onnx_sha256: str
    plan_sha256: str
    precision: Literal["fp32", "fp16", "int8"]
    profile: BatchProfile
    workspace_mb: int | None = None
    strongly_typed: bool = True
    built_at: str
    meta: ModelMeta

    def key(self) -> CacheKey:
        return CacheKey(self.onnx_sha256, self.tensorrt_version, self.compute_capability, self.precision)


def sidecar_path(plan_path: str | os.PathLike) -> Path:
    p = Path(plan_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def write_engine(plan_path: str | os.PathLike, plan: bytes, info: EngineInfo) -> Path:
    """Write the plan and its sidecar atomically (each via temp file + rename).

    The plan goes first: a crash between the two renames leaves a plan whose sha256 does
    not match the (old or absent) sidecar, which :func:`check_engine` refuses.
    """
    plan_path = Path(plan_path)
    if info.plan_sha256 != hashlib.sha256(plan).hexdigest():
        raise ValueError("EngineInfo.plan_sha256 does not match the plan bytes")
    atomic_write_bytes(plan_path, plan)
    atomic_write_bytes(sidecar_path(plan_path), info.model_dump_json(indent=2).encode())
    return plan_path


def read_engine_info(plan_path: str | os.PathLike) -> EngineInfo:
    plan_path = Path(plan_path)
    side = sidecar_path(plan_path)
    if not plan_path.is_file():
        raise ModelFileError(f"{plan_path}: no such engine file.")
    if not side.is_file():
        raise ModelFileError(
            f"{plan_path}: no metadata sidecar {side.name} next to it, so ffrt cannot tell which model, TensorRT "
            "and GPU it was built for; rebuild it with: ffexport --ckpt model.pt --out DIR --engine "
            "(or load the .onnx with backend=\"tensorrt\", which builds and caches a plan)."
        )
    try:
        text = side.read_text()
        data = json.loads(text)
    except (OSError, ValueError) as e:  # ValueError: bad JSON or text encoding
        raise ModelFileError(f"{side}: unreadable engine metadata ({e}).") from e
    except RecursionError as e:  # nested deeper than Python's parser recurses: not ours
        raise ModelFileError(f"{side}: unreadable engine metadata (nested too deeply to be an ffrt sidecar).") from e
    if isinstance(data, dict) and isinstance(data.get("schema_version"), int) and data["schema_version"] > ENGINE_SCHEMA_VERSION:
        raise ModelFileError(
            f"{side}: engine metadata schema {data['schema_version']} was written by a newer ffrt (this one reads up to "
            f"{ENGINE_SCHEMA_VERSION}); upgrade ffrt: pip install -U ffrt"
        )
    try:
        # Strict, like ModelMeta.from_json: the embedded model metadata gets the same checks.
        return EngineInfo.model_validate_json(text, strict=True)
    except ValidationError as e:
        raise ModelFileError(f"{side}: engine metadata is not usable:\n{readable(e)}") from e


def engine_mismatches(
    info: EngineInfo,
    *,
    tensorrt_version: str | None,
    compute_capability: str | None,
    onnx_sha256: str | None = None,
    precision: str | None = None,
    plan_sha256: str | None = None,
) -> list[str]:
    """Every way the plan does not fit this machine / this ONNX (empty = fits).

    None for an expected value means "not checked".
    """
    out: list[str] = []
    if tensorrt_version is not None and info.tensorrt_version != tensorrt_version:
        out.append(f"built with TensorRT {info.tensorrt_version}, this machine has TensorRT {tensorrt_version}")
    if compute_capability is not None and info.compute_capability != compute_capability:
        out.append(
            f"built for a GPU of compute capability {info.compute_capability} ({info.gpu_name}), "
            f"this GPU has {compute_capability}"
        )
    if onnx_sha256 is not None and info.onnx_sha256 != onnx_sha256:
        out.append(f"built from another ONNX (sha256 {info.onnx_sha256[:12]}..., this one is {onnx_sha256[:12]}...)")
    if precision is not None and info.precision != precision:
        out.append(f"built at precision {info.precision}, {precision} was asked for")
    if plan_sha256 is not None and info.plan_sha256 != plan_sha256:
        out.append("the plan file was changed after its metadata was written (sha256 differs)")
    return out


def check_engine(plan_path: str | os.PathLike, plan: bytes, info: EngineInfo, *, tensorrt_version: str | None,
                 compute_capability: str | None, onnx_sha256: str | None = None, precision: str | None = None) -> None:
    """Raise EngineMismatchError naming every mismatch (and how to rebuild) if the plan does not fit."""
    problems = engine_mismatches(
        info, tensorrt_version=tensorrt_version, compute_capability=compute_capability, onnx_sha256=onnx_sha256,
        precision=precision, plan_sha256=hashlib.sha256(plan).hexdigest(),
    )
    if problems:
        raise EngineMismatchError(
            f"{plan_path}: refusing to run this TensorRT plan: " + "; ".join(problems) + ". Rebuild it on this machine: "
            "ffexport --ckpt model.pt --out DIR --engine [--fp16], or Detector(\"model.onnx\", backend=\"tensorrt\") "
            "(builds and caches a plan)."
        )


# -- build (needs TensorRT and a GPU) -----------------------------------------------------


class EngineBuildError(BackendUnavailableError):
    """TensorRT could not build a plan (parser errors, unsupported layer, out of memory)."""


def build_plan(
    onnx_path: str | os.PathLike,
    meta: ModelMeta,
    profile: BatchProfile,
    workspace_mb: int | None = DEFAULT_WORKSPACE_MB,
    timing_cache: str | os.PathLike | None = None,
    log=print,
) -> tuple[bytes, EngineInfo]:
    """Parse the ONNX into a strongly typed network and build a serialized plan.

    Precision comes from the ONNX (FP16 tensors, Q/DQ nodes): no FP16/INT8 builder flags,
    which TensorRT 10 deprecates and 11 removes. API references (TensorRT Python API,
    https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/Builder.html
    and .../11.0.0/_static/python-api/infer/Core/Builder.html): create_network with
    ``1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)`` (TRT 11: flag deprecated and
    ignored, strong typing always on), OnnxParser.parse + get_error, create_optimization_profile
    + set_shape, config.set_memory_pool_limit(MemoryPoolType.WORKSPACE),
    create_timing_cache/set_timing_cache/get_timing_cache().serialize(),
    build_serialized_network.
    """
    reason = missing_for_tensorrt()
    if reason is not None:
        raise BackendUnavailableError(reason)
    import tensorrt as trt  # noqa: PLC0415

    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    data = onnx_path.read_bytes()
    # parse_from_file resolves external data next to the file; our ONNX is one file, so
    # parse(bytes) is equivalent and keeps the sha256 we record tied to what was parsed.
    if not parser.parse(data, str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"{onnx_path}: TensorRT {trt.__version__} could not parse the ONNX ({len(errors)} error(s)):\n"
            + "\n".join(f"  [{i}] {e}" for i, e in enumerate(errors))
        )
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    mn, op, mx = profile.shapes(meta)
    opt_profile.set_shape(meta.input.name, mn, op, mx)
    config.add_optimization_profile(opt_profile)

    cache_path = Path(timing_cache) if timing_cache else None
    cache_blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    tcache = config.create_timing_cache(cache_blob)
    config.set_timing_cache(tcache, ignore_mismatch=False)
    if cache_path:
        log(f"timing cache: {'reusing' if cache_blob else 'creating'} {cache_path}")

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT {trt.__version__} failed to build the engine (see its log above).")
    plan = bytes(plan)
    if cache_path:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    gpu = gpu_info()
    info = EngineInfo(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name if gpu else "unknown",
        compute_capability=gpu.compute_capability if gpu else "unknown",
        onnx_sha256=hashlib.sha256(data).hexdigest(),
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        precision=meta.precision,
        profile=profile,
        workspace_mb=workspace_mb,
        strongly_typed=True,
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        # The plan accepts profile.max at most: the Detector chunks batches by meta.batch_max.
        meta=meta.model_copy(update={"batch_max": profile.max}),
    )
    return plan, info


def cached_plan(
    onnx_path: str | os.PathLike,
    meta: ModelMeta,
    cache_dir: str | os.PathLike | None = None,
    profile: BatchProfile | None = None,
    rebuild_mismatched: bool = True,
    log=print,
) -> Path:
    """Path of a plan for this ONNX on this machine, building it on the first call.

    A cached plan whose sidecar disagrees (another ONNX, TensorRT, GPU or precision, or a
    modified plan) is rebuilt when ``rebuild_mismatched`` else refused; never run.
    """
    reason = missing_for_tensorrt()
    if reason is not None:
        raise BackendUnavailableError(reason)
    gpu = gpu_info()
    trt_ver = tensorrt_version()
    onnx_sha = sha256_file(onnx_path)
    key = CacheKey(onnx_sha, trt_ver, gpu.compute_capability, meta.precision)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    plan_path = cache_dir / key.filename(Path(onnx_path).stem.split(".")[0])
    if plan_path.is_file():
        try:
            info = read_engine_info(plan_path)
            check_engine(plan_path, plan_path.read_bytes(), info, tensorrt_version=trt_ver,
                         compute_capability=gpu.compute_capability, onnx_sha256=onnx_sha, precision=meta.precision)
            return plan_path
        except ModelFileError as e:
            if not rebuild_mismatched:
                raise
            log(f"ffrt: rebuilding cached engine: {e}")
    plan, info = build_plan(onnx_path, meta, profile or BatchProfile.for_model(meta), timing_cache=cache_dir / "timing.cache", log=log)
    write_engine(plan_path, plan, info)
    return plan_path

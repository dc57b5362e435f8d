"""A TensorRT plan file's description: the sidecar ``<plan>.json`` (:class:`EngineInfo`),
the graph hash and batch profile it records, the cache key it implies, the checks that
refuse a plan that does not fit, and the metadata an explicit ``.engine`` runs with.

The other half of plan handling (cache folder, build, prune: :mod:`ffrt.tensorrt.build`) imports
this module; ``ffrt.tensorrt.build`` re-exports every name here, so both spellings work. Why plans
are tied to the graph and not the file, and where an explicit engine's thresholds come
from: see :mod:`ffrt.tensorrt.build`. Nothing here imports tensorrt or a CUDA API.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import EngineMismatchError, InvalidArgumentError, ModelFileError
from ..meta import ModelMeta, readable
from ffcore.files import atomic_write_bytes

ENGINE_FORMAT = "ffrt.gpu.engine"  # a file-format tag, not a module path: every sidecar written carries it
ENGINE_SCHEMA_VERSION = 3  # 2: graph_sha256 + source_onnx (plans keyed on the graph, not the file); 3: tf32
SIDECAR_SUFFIX = ".json"
#: Where Detector(..., backend="tensorrt") keeps built plans unless told otherwise.

def graph_sha256(model) -> str:
    """sha256 of an ONNX model without its ``metadata_props``, serialized deterministically.

    ``model``: a path, serialized bytes or an ``onnx.ModelProto`` (not modified). Two files
    that differ only in their ffrt metadata (thresholds, score statistics) have the same
    graph hash; any change to a node, weight, input or opset changes it.
    """
    import onnx

    if isinstance(model, (str, os.PathLike)):
        proto = onnx.load(str(model))
    elif isinstance(model, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(model))
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
    del proto.metadata_props[:]
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


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


@dataclass(frozen=True)
class CacheKey:
    """Everything a plan depends on. Metadata (thresholds) is deliberately not part of it."""

    graph_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: tuple[int, int, int]  # batch (min, opt, max)

    def digest(self) -> str:
        text = json.dumps(
            [self.graph_sha256, self.tensorrt_version, self.gpu_name, self.compute_capability, self.precision,
             list(self.profile)],
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def filename(self, stem: str = "model") -> str:
        cc = self.compute_capability.replace(".", "")
        return f"{stem}.{self.precision}.trt{self.tensorrt_version}.sm{cc}.{self.digest()}.engine"



# -- sidecar ------------------------------------------------------------------------------


class EngineInfo(BaseModel):
    """What a plan was built from and for. Stored as ``<plan>.json`` next to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["ffrt.gpu.engine"] = ENGINE_FORMAT
    schema_version: int = ENGINE_SCHEMA_VERSION
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    #: sha256 of the source ONNX's graph (:func:`graph_sha256`); None in schema-1 sidecars.
    graph_sha256: str | None = None
    #: Absolute path of the source ONNX when the plan was built (its file name is looked up
    #: next to an explicit engine; the cache prunes by it).
    source_onnx: str = ""
    #: sha256 of the whole source file at build time (informative: metadata changes it).
    onnx_sha256: str | None = None
    plan_sha256: str
    precision: Literal["fp32", "fp16", "int8"]
    profile: BatchProfile
    workspace_mb: int | None = None
    strongly_typed: bool = True
    #: Whether TensorRT could use TF32 for FP32 tensors; ffrt clears it (None: schema < 3).
    tf32: bool | None = None
    built_at: str
    #: The ModelMeta at build time. Thresholds here are a fallback only: see engine_meta().
    meta: ModelMeta

    def key(self) -> CacheKey | None:
        if self.graph_sha256 is None:
            return None
        return CacheKey(self.graph_sha256, self.tensorrt_version, self.gpu_name, self.compute_capability,
                        self.precision, (self.profile.min, self.profile.opt, self.profile.max))


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
    graph_sha256: str | None = None,
    precision: str | None = None,
    plan_sha256: str | None = None,
    profile: BatchProfile | None = None,
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
    if graph_sha256 is not None:
        if info.graph_sha256 is None:
            out.append("its metadata (written by an older ffrt) records no graph hash, so it cannot be matched to an ONNX")
        elif info.graph_sha256 != graph_sha256:
            out.append(f"built from another graph (sha256 {info.graph_sha256[:12]}..., this ONNX's graph is "
                       f"{graph_sha256[:12]}...)")
    if precision is not None and info.precision != precision:
        out.append(f"built at precision {info.precision}, {precision} was asked for")
    if profile is not None and info.profile != profile:
        out.append(f"built for batches {info.profile.min}..{info.profile.max} (opt {info.profile.opt}), "
                   f"{profile.min}..{profile.max} (opt {profile.opt}) was asked for")
    if plan_sha256 is not None and info.plan_sha256 != plan_sha256:
        out.append("the plan file was changed after its metadata was written (sha256 differs)")
    return out


def check_engine(plan_path: str | os.PathLike, plan: bytes, info: EngineInfo, *, tensorrt_version: str | None,
                 compute_capability: str | None, graph_sha256: str | None = None, precision: str | None = None,
                 profile: BatchProfile | None = None) -> None:
    """Raise EngineMismatchError naming every mismatch (and how to rebuild) if the plan does not fit."""
    problems = engine_mismatches(
        info, tensorrt_version=tensorrt_version, compute_capability=compute_capability, graph_sha256=graph_sha256,
        precision=precision, plan_sha256=hashlib.sha256(plan).hexdigest(), profile=profile,
    )
    if problems:
        raise EngineMismatchError(
            f"{plan_path}: refusing to run this TensorRT plan: " + "; ".join(problems) + ". Rebuild it on this machine: "
            "ffexport --ckpt model.pt --out DIR --engine [--fp16], or Detector(\"model.onnx\", backend=\"tensorrt\") "
            "(builds and caches a plan)."
        )


# -- explicit engines: thresholds from the ONNX next to them ------------------------------------


def source_onnx_next_to(plan_path: str | os.PathLike, info: EngineInfo) -> Path | None:
    """The source ONNX in the engine's folder (by the name recorded at build time, else
    ``<engine stem>.onnx``), or None."""
    plan_path = Path(plan_path)
    names = [Path(info.source_onnx).name] if info.source_onnx else []
    names.append(plan_path.stem + ".onnx")
    for name in names:
        candidate = plan_path.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def engine_meta(plan_path: str | os.PathLike, log=None) -> ModelMeta:
    """The metadata a Detector uses for an explicit engine.

    Source of truth for thresholds (and score statistics): the ONNX the plan was built from,
    found next to the engine, when its graph hash is the one the sidecar records, so that
    ``ffcalib thresholds model.onnx`` takes effect without a rebuild. Another graph there
    is refused (the engine is stale: rebuild it). No ONNX next to it, or a sidecar from
    before graph hashes: the sidecar's copy, frozen at build time, with a warning.
    """
    from ..metafile import read_onnx_meta

    warn = log or logging.getLogger("ffrt").warning
    plan_path = Path(plan_path)
    info = read_engine_info(plan_path)
    # The plan accepts at most its profile's max batch, whatever the ONNX was exported for.
    plan_limits = {"batch_max": info.profile.max}
    source = source_onnx_next_to(plan_path, info)
    if source is None:
        warn(f"ffrt: {plan_path.name}: no source ONNX ({Path(info.source_onnx).name or plan_path.stem + '.onnx'}) "
             "next to it; using the thresholds frozen in its sidecar at build time. Keep the ONNX next to the engine "
             "so re-tuned thresholds (ffcalib thresholds) take effect.")
        return info.meta.model_copy(update=plan_limits)
    if info.graph_sha256 is None:
        warn(f"ffrt: {plan_path.name}: its sidecar (written by an older ffrt) records no graph hash, so it cannot be "
             f"matched to {source.name}; using the thresholds frozen in the sidecar. Rebuild the engine to link them.")
        return info.meta.model_copy(update=plan_limits)
    graph = graph_sha256(source)
    if graph != info.graph_sha256:
        raise EngineMismatchError(
            f"{plan_path}: was built from another graph than {source.name} next to it (sidecar {info.graph_sha256[:12]}..., "
            f"{source.name} {graph[:12]}...), so neither its thresholds nor its input contract can be trusted. Rebuild "
            f"the engine from {source.name}: python -m ffexport.tensorrt {source}"
        )
    return read_onnx_meta(source).model_copy(update=plan_limits)

"""What one export is asked to do: every option of ``ffexport`` as one typed, checked value.

``ffexport.export(ExportRequest(...))`` is the library call; the CLI only turns argv into an
``ExportRequest`` (cli.py). A request that cannot work is refused when it is made, before the
checkpoint is read or anything is written: pydantic raises a ``ValidationError`` whose message
is the one line ``ffexport`` prints (:func:`refusal` reads it back). What only the checkpoint
or the machine can tell (no training data recorded, no TensorRT here) is the steps' to say.

Torch-free and cheap to import: the defaults shown by ``ffexport --help`` are read from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ffrt.tensorrt.build import DEFAULT_WORKSPACE_MB

DEFAULT_OPSET = 18
DEFAULT_BATCH_MAX = 32
#: LayerNormalization, which the graph uses at every scale, is in ONNX from opset 17.
MIN_OPSET = 17

Int8Scope = Literal["backbone", "all"]
CalibMethod = Literal["minmax", "entropy", "percentile"]
TritonKind = Literal["gpu", "cpu"]
#: The fields that each ask for one reduced-precision file; each is gated against FP32 on its
#: own, so one export makes at most one of them.
PRECISION_FLAGS = ("fp16", "int8", "bf16")
#: (field, lowest value, what it counts): the numbers that cannot work below their bound.
NUMBER_RULES = (
    ("parity_count", 1, "images for the parity check"),
    ("batch_max", 1, "the largest batch"),
    ("fp16_images", 1, "images per class for the FP16 check"),
    ("calib_count", 0, "calibration images (0 = all)"),
    ("refit_epochs", 0, "re-fit epochs (0 = plain post-training quantization)"),
    ("batch_min", 1, "the smallest engine batch"),
    ("batch_opt", 1, "the engine batch TensorRT tunes for"),
    ("workspace", 0, "the builder workspace in MB"),
    ("device", 0, "the GPU index"),
)


def flag(field: str) -> str:
    """The CLI option of a request field: the name messages use, so a user of either finds it."""
    return "--" + field.replace("_", "-")


def choices(kind) -> tuple[str, ...]:
    """The values a Literal field accepts (the CLI offers the same)."""
    return get_args(kind)


def opset_problem(opset: int) -> str | None:
    if opset < MIN_OPSET:
        return f"--opset {opset}: opset {MIN_OPSET} or newer is required (LayerNormalization)"
    return None


class ExportRequest(BaseModel):
    """One export: checkpoint in, checked files out (the CLI's options, same names and defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ckpt: Path
    out: Path
    batch_max: int = DEFAULT_BATCH_MAX
    opset: int = DEFAULT_OPSET
    #: Folder of images, or elpv:mono / elpv:poly; None: the validation images the checkpoint records.
    parity_images: str | None = None
    parity_count: int = 8
    fp16: bool = False
    fp16_images: int = 32
    int8: bool = False
    #: model.bf16.onnx, the fast CPU variant: True asks for it (refused where it cannot be made or
    #: fails its gate); False leaves it out; None (the default) makes it where this machine can make
    #: and gate it (a CPU with AMX or AVX512-BF16, OpenVINO, the training data, no other reduced
    #: precision asked) and otherwise says in one line why not, without failing the export.
    bf16: bool | None = None
    #: The data the precision variants calibrate / re-fit / gate on; None: the checkpoint's training data.
    calib: str | None = None
    calib_count: int = 64
    int8_scope: Int8Scope = "backbone"
    calib_method: CalibMethod = "minmax"
    #: None: int8_head.DEFAULT_REFIT_EPOCHS; 0: plain post-training quantization.
    refit_epochs: int | None = None
    #: None: ffcalib's default for the INT8 gate.
    min_spearman: float | None = None
    force: bool = False
    engine: bool = False
    batch_min: int = 1
    #: None: min(8, batch_max).
    batch_opt: int | None = None
    workspace: int = DEFAULT_WORKSPACE_MB
    #: None: OUT/timing.cache.
    timing_cache: Path | None = None
    device: int = 0
    triton: bool = False
    triton_kind: TritonKind = "gpu"

    @model_validator(mode="after")
    def _workable(self) -> "ExportRequest":
        problem = self._first_problem()
        if problem is not None:
            # A custom error type keeps the message as written (no "Value error, " prefix).
            raise PydanticCustomError("export_request", "{problem}", {"problem": problem})
        return self

    def _first_problem(self) -> str | None:
        if sum(getattr(self, f) is True for f in PRECISION_FLAGS) > 1:
            return "choose one of --fp16, --int8 and --bf16 per export (each is checked against FP32)"
        for field, low, what in NUMBER_RULES:
            value = getattr(self, field)
            if value is not None and value < low:
                return f"{flag(field)} {value}: {what} must be at least {low}"
        return opset_problem(self.opset)

    def asks(self, field: str) -> bool | None:
        """Whether the request asks for the variant of ``field``: True, False, or None where it is
        to be made only if this machine can (a precision left unset while no other is asked)."""
        value = getattr(self, field)
        if value is None and any(getattr(self, f) is True for f in PRECISION_FLAGS if f != field):
            return False
        return value


def refusal(error: ValidationError) -> str:
    """The one line that says why a request was refused (its first problem)."""
    first = error.errors()[0]
    if first["type"] == "export_request":
        return first["msg"]
    where = ".".join(str(p) for p in first["loc"])
    return f"{flag(where) if where in ExportRequest.model_fields else where}: {first['msg']}"

"""What one export did: ``ExportReport``, returned by ``ffexport.export``.

The files written (with their precision and the checks each passed), the outcome of every
variant that ran, and one overall status; :data:`EXIT_CODES` is how the commands turn that
status into their exit code. Torch-free.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ffcore.exitcodes import EXIT_FAILED, EXIT_GATE, EXIT_UNAVAILABLE


class ExportStatus(str, Enum):
    OK = "ok"
    #: The input cannot work, or a check refused a file: nothing of this run was published.
    FAILED = "failed"
    #: An accuracy gate refused the files (``force`` writes them anyway): nothing was published.
    GATE_FAILED = "gate_failed"
    #: A variant cannot be made on this machine (BF16 without a BF16 CPU, an engine without
    #: TensorRT and a GPU); for the engine, the ONNX files are published all the same.
    UNAVAILABLE = "unavailable"
    #: A variant made by default only where this machine can make it and pass its gate (BF16) was
    #: not made here; the reason says why. The run goes on: nothing else depends on it.
    SKIPPED = "skipped"


EXIT_CODES = {
    ExportStatus.OK: 0,
    ExportStatus.SKIPPED: 0,
    ExportStatus.FAILED: EXIT_FAILED,
    ExportStatus.GATE_FAILED: EXIT_GATE,
    ExportStatus.UNAVAILABLE: EXIT_UNAVAILABLE,
}


class GateVerdict(BaseModel):
    """One check a file went through before it was published."""

    model_config = ConfigDict(frozen=True)

    check: str
    passed: bool
    #: Written although it failed (``force``): a BF16 gate so recorded makes precision="auto" run FP32.
    forced: bool = False


class WrittenFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    variant: str
    #: "fp32", "fp16", "int8" (as the file's metadata says); None for a file that is not a model.
    precision: str | None
    size_bytes: int
    gates: tuple[GateVerdict, ...] = ()


class VariantOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    variant: str
    status: ExportStatus
    #: The names (relative to the output folder) the variant made; published only when the
    #: report's ``files`` lists them.
    files: tuple[str, ...] = ()
    #: When not OK: the one-line reason.
    reason: str = ""
    seconds: float = 0.0


class ExportReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: ExportStatus
    #: When not OK: the one line that says why and what to do.
    reason: str = ""
    #: Published into the output folder (empty when a check refused the run).
    files: tuple[WrittenFile, ...] = ()
    #: Published folders (the Triton repository's model folders).
    folders: tuple[Path, ...] = ()
    variants: tuple[VariantOutcome, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is ExportStatus.OK

    def file(self, name: str) -> WrittenFile:
        """The published file called ``name`` (KeyError when this run published none)."""
        for f in self.files:
            if f.path.name == name:
                return f
        raise KeyError(f"{name}: not published by this export (published: {', '.join(f.path.name for f in self.files)})")

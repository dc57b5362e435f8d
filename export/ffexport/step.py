"""The one signature of every export step: ``step(request, made) -> StepOutcome``.

``made`` is what the earlier steps produced (the loaded model, the parity images, the stage
and the files already checked in it); the outcome says what this step added, or why it
stopped the run. The orchestrator (orchestrate.py) folds each outcome into the next ``made``.
Torch-free, so the TensorRT step (tensorrt.py) keeps ``python -m ffexport.tensorrt`` light.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ffrt.meta import ModelMeta

from .report import ExportStatus, GateVerdict
from .staging import Stage

#: Said after every refusal of a file that was being checked in the stage.
NOTHING_WRITTEN = "; nothing was written, the previous files in the output folder are untouched"


@dataclass(frozen=True)
class MadeFile:
    #: Relative to the output folder (and to the stage, before publishing).
    name: str
    variant: str
    #: None for a file that is not a model (an engine's sidecar).
    meta: ModelMeta | None
    gates: tuple[GateVerdict, ...] = ()


@dataclass(frozen=True)
class StepOutcome:
    status: ExportStatus = ExportStatus.OK
    #: New files, or files of earlier steps it changed (same name: the later entry wins).
    files: tuple[MadeFile, ...] = ()
    #: Folders it staged, relative to the output folder (Stage.publish's ``dirs``).
    folders: tuple[str, ...] = ()
    #: The file a TensorRT engine should be built from, when this step made a better one.
    engine_source: str | None = None
    #: When not OK: the one-line reason.
    reason: str = ""


def refused(why: str, status: ExportStatus = ExportStatus.FAILED) -> StepOutcome:
    return StepOutcome(status=status, reason=why)


def refused_in_stage(why: str) -> StepOutcome:
    """A staged file failed its check: the stage is removed, nothing is published."""
    return refused(why + NOTHING_WRITTEN)


@dataclass(frozen=True)
class Made:
    """What the steps so far produced; each step is handed this and the request."""

    #: The checkpoint's FastFlow (fftrain.model), in eval mode, and its payload.
    model: Any
    payload: dict
    #: uint8 NHWC images at the model size: every re-exported graph is checked against PyTorch on them.
    parity_images: Any
    stage: Stage
    files: tuple[MadeFile, ...] = ()
    folders: tuple[str, ...] = ()
    engine_source: str = "model.onnx"
    #: True once the files are in the output folder under their usable names.
    published: bool = False

    def file(self, name: str) -> MadeFile:
        return next(f for f in self.files if f.name == name)

    def path(self, name: str) -> Path:
        """Where the file is now: in the stage until published, then in the output folder."""
        return self.stage.out / name if self.published else self.stage.path(name)

    def plus(self, outcome: StepOutcome) -> "Made":
        files = list(self.files)
        for new in outcome.files:
            at = next((i for i, f in enumerate(files) if f.name == new.name), None)
            if at is None:
                files.append(new)
            else:
                files[at] = new
        return replace(self, files=tuple(files), folders=self.folders + outcome.folders,
                       engine_source=outcome.engine_source or self.engine_source)

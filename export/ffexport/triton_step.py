"""``triton``: a Triton model repository of the checked model, staged with the model files.

All of a run's files or none: the repository's model folders are published with the model
files (staging.py; a kill between renames is finished by the next export).
"""

from __future__ import annotations

from ffrt.errors import FFRTError
from ffrt.triton.repository import Options, write_repository

from .fp16_step import FP16_NAME
from .fp32_step import FP32_NAME
from .request import ExportRequest
from .step import Made, StepOutcome, refused

FOLDER = "triton"


def triton_step(request: ExportRequest, made: Made) -> StepOutcome:
    """ffrt_model serves the FP16 file when this export made one, else the FP32 file."""
    model = FP16_NAME if request.fp16 else FP32_NAME
    root = made.stage.path(FOLDER)
    try:
        write_repository(made.path(model), root, Options(kind=request.triton_kind))
    except FFRTError as e:
        return refused(f"the Triton repository was not written (nor the model files): {e}")
    return StepOutcome(folders=tuple(f"{FOLDER}/{d.name}" for d in sorted(root.iterdir()) if d.is_dir()))

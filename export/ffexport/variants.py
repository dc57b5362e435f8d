"""Every file ffexport can make, one row each: what it is called, what it writes, what it
needs, when it runs, and the one step function that makes it.

The orchestrator (orchestrate.py) runs the rows a request asks for, in this order and phase
by phase; every step has the signature of step.py. A new variant is a new row and its step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ffcalib.int8 import CPU_NAME, TRT_NAME
from ffrt.triton.protocol import DETECTOR_MODEL, GRAPH_MODEL

from .bf16_head import BF16_NAME, bf16_step
from .fp16_step import FP16_NAME, fp16_step
from .fp32_step import FP32_NAME, fp32_step
from .int8_step import int8_step
from .request import ExportRequest
from .step import Made, StepOutcome
from .tensorrt import engine_step
from .triton_step import FOLDER as TRITON_FOLDER
from .triton_step import triton_step


class Phase(Enum):
    #: A model file, written into the stage and checked there (then the TensorRT 10 graph check of them all).
    FILE = "file"
    #: Built in the stage from the checked files, published with them.
    PACKAGE = "package"
    #: Built from the published files on this machine; its failure leaves them published.
    AFTER_PUBLISH = "after_publish"


@dataclass(frozen=True)
class Variant:
    name: str
    #: What it writes into the output folder.
    writes: tuple[str, ...]
    #: What it needs beyond the base install ("" = nothing).
    needs: str
    phase: Phase
    #: The ExportRequest flag that asks for it (its value None: made where this machine can); None: every export.
    flag: str | None
    step: Callable[[ExportRequest, Made], StepOutcome]

    def asked(self, request: ExportRequest) -> bool:
        return self.flag is None or request.asks(self.flag) is not False


VARIANTS: tuple[Variant, ...] = (
    Variant("fp32", (FP32_NAME,), "", Phase.FILE, None, fp32_step),
    Variant("fp16", (FP16_NAME,), "", Phase.FILE, "fp16", fp16_step),
    Variant("int8", (TRT_NAME, CPU_NAME), "the training data (calib, or the checkpoint's)", Phase.FILE, "int8",
            int8_step),
    Variant("bf16", (BF16_NAME,), 'a CPU with AMX or AVX512-BF16, OpenVINO (pip install "ffrt[openvino]"), the '
            "training data; made by default where these are there", Phase.FILE, "bf16", bf16_step),
    Variant("triton", (f"{TRITON_FOLDER}/{GRAPH_MODEL}/", f"{TRITON_FOLDER}/{DETECTOR_MODEL}/"), "", Phase.PACKAGE,
            "triton", triton_step),
    Variant("tensorrt", ("model[.fp16|.int8-trt].engine", "model[...].engine.json"),
            'an NVIDIA GPU and TensorRT (pip install "ffrt[gpu]")', Phase.AFTER_PUBLISH, "engine", engine_step),
)


def asked(request: ExportRequest, phase: Phase) -> list[Variant]:
    """The rows of ``phase`` that ``request`` asks for, in table order."""
    return [v for v in VARIANTS if v.phase is phase and v.asked(request)]

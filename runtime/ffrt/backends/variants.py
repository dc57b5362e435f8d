"""Precision variants next to a model file that ``backend="auto"`` may run instead of it.

``ffexport --bf16`` writes ``model.bf16.onnx`` beside ``model.onnx``: the same trained model
with its flow head re-fit on the features of the backbone in BF16, its thresholds calibrated
on those scores, and the BF16 accuracy gate (against ``model.onnx``, on validation data)
recorded in it. On a CPU with native BF16 that file runs about twice as fast as FP32. So
``Detector("model.onnx")`` with ``backend="auto"`` and ``precision="auto"`` measures it
beside the FP32 file and runs the faster (``backends/cpuchoice.py``), and says so.

A variant qualifies only when it is the same training (``source_checkpoint_sha256``), takes
the same input, and carries a passed BF16 gate for the configuration OpenVINO runs
(``keep_fp32="head"``); anything else is left out with a line saying why. INT8 files do not
record their accuracy gate in the file yet, so they are not picked automatically (load one
by its path to run it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import FFRTError
from ..meta import ModelMeta
from ..metafile import read_onnx_meta

#: The variant files "auto" looks for, by the suffix that replaces ".onnx".
BF16_SUFFIX = ".bf16.onnx"


@dataclass(frozen=True)
class Variant:
    path: Path
    meta: ModelMeta
    #: The precision it is for ("bf16"), and the backend precision that runs it.
    precision: str


def bf16_gate_passed(meta: ModelMeta) -> bool:
    return any(g.precision == "bf16" and g.keep_fp32 == "head" and g.passed for g in meta.precision_gates)


def gated_variants(model_path: Path, meta: ModelMeta) -> tuple[list[Variant], list[str]]:
    """The qualifying variants of ``model_path`` and, for each variant file that is there but
    does not qualify, why (one line each). Only an FP32 base file has variants."""
    model_path = Path(model_path)
    if meta.precision != "fp32" or meta.head_fit or model_path.name.endswith(BF16_SUFFIX) \
            or model_path.suffix.lower() != ".onnx":
        return [], []
    candidate = model_path.with_name(model_path.name[: -len(".onnx")] + BF16_SUFFIX)
    if not candidate.is_file():
        return [], []
    try:
        other = read_onnx_meta(candidate)
    except FFRTError as e:
        return [], [f"{candidate.name}: not readable ({str(e).splitlines()[0]})"]
    if other.source_checkpoint_sha256 != meta.source_checkpoint_sha256:
        return [], [f"{candidate.name}: exported from another checkpoint than {model_path.name}"]
    if other.input != meta.input:
        return [], [f"{candidate.name}: takes another input than {model_path.name}"]
    if not bf16_gate_passed(other):
        return [], [f"{candidate.name}: carries no passed BF16 accuracy gate (keep_fp32='head')"]
    return [Variant(candidate, other, "bf16")], []

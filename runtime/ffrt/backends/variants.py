"""Precision variants next to a model file that ``backend="auto"`` may run instead of it.

``ffexport`` writes, next to ``model.onnx``:

- ``model.bf16.onnx`` (by default on a CPU with native BF16): the same trained model with its
  flow head re-fit on the features of the backbone in BF16, its thresholds calibrated on those
  scores, and the BF16 accuracy gate (against ``model.onnx``, on validation data) recorded in
  it. On such a CPU it runs about twice as fast as FP32.
- ``model.int8-cpu.onnx`` (``--int8``): Q/DQ convolutions in INT8 with the head re-fit on its
  INT8 backbone, its INT8 gate recorded in it; where the machine computes BF16, also the gate
  of its float parts in BF16 on OpenVINO. On a VNNI CPU, with every convolution INT8, it beats
  the BF16 variant at batch 8 (benchmarks/README.md, "INT8 on a VNNI CPU without AMX").

So ``Detector("model.onnx")`` with ``backend="auto"`` and ``precision="auto"`` measures every
qualifying variant beside the FP32 file on every CPU backend that runs it, in each precision its
own gates allow and its thresholds were set in, and runs the fastest (``backends/cpuchoice.py``),
and says so. An INT8 file's float parts run in FP32; in BF16 on OpenVINO only where the file
carries a passed BF16 gate AND its thresholds were set on BF16 scores (``ffcalib thresholds
--backend openvino --precision bf16``): ffexport sets them on FP32 float parts, which every CPU
runs, and thresholds set on one of the two misjudge parts near the threshold on the other.

A variant qualifies only when it is the same training (``source_checkpoint_sha256``), takes
the same input, and carries a passed gate of its kind (:data:`VARIANT_FILES`); anything else is
left out with a line saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import FFRTError
from ..meta import ModelMeta
from ..metafile import read_onnx_meta
from ..threshold_rules import numerics_mismatch

#: The variant files "auto" looks for, by the suffix that replaces ".onnx".
BF16_SUFFIX = ".bf16.onnx"
INT8_CPU_SUFFIX = ".int8-cpu.onnx"


@dataclass(frozen=True)
class Variant:
    path: Path
    meta: ModelMeta
    #: The precisions the backends are asked for, each a candidate of its own.
    precisions: tuple[str, ...]


def bf16_gate_passed(meta: ModelMeta) -> bool:
    return any(g.precision == "bf16" and g.keep_fp32 == "head" and g.passed for g in meta.precision_gates)


def int8_gate_passed(meta: ModelMeta) -> bool:
    return (meta.precision == "int8" and meta.target == "cpu"
            and any(g.precision == "int8" and g.passed for g in meta.precision_gates))


def _bf16_only(_meta: ModelMeta) -> tuple[str, ...]:
    return ("bf16",)


def _int8_float_parts(meta: ModelMeta) -> tuple[str, ...]:
    """FP32 float parts (every backend), and BF16 ones where the file's gate allows them (a
    backend that cannot run BF16 refuses that candidate)."""
    return ("fp32", "bf16") if bf16_gate_passed(meta) else ("fp32",)


@dataclass(frozen=True)
class VariantFile:
    suffix: str
    #: Whether the file carries what lets "auto" run it, and what to say when it does not.
    qualifies: Callable[[ModelMeta], bool]
    missing: str
    precisions: Callable[[ModelMeta], tuple[str, ...]]


VARIANT_FILES: tuple[VariantFile, ...] = (
    VariantFile(BF16_SUFFIX, bf16_gate_passed, "carries no passed BF16 accuracy gate (keep_fp32='head')", _bf16_only),
    VariantFile(INT8_CPU_SUFFIX, int8_gate_passed,
                "carries no passed INT8 accuracy gate for the CPU encoding (ffexport --int8 records one)",
                _int8_float_parts),
)


def gated_variants(model_path: Path, meta: ModelMeta) -> tuple[list[Variant], list[str]]:
    """The qualifying variants of ``model_path`` and, for each variant file that is there but
    does not qualify, why (one line each). Only an FP32 base file has variants."""
    model_path = Path(model_path)
    if meta.precision != "fp32" or meta.head_fit or model_path.suffix.lower() != ".onnx" \
            or any(model_path.name.endswith(f.suffix) for f in VARIANT_FILES):
        return [], []
    variants, problems = [], []
    for kind in VARIANT_FILES:
        candidate = model_path.with_name(model_path.name[: -len(".onnx")] + kind.suffix)
        if not candidate.is_file():
            continue
        try:
            other = read_onnx_meta(candidate)
        except FFRTError as e:
            problems.append(f"{candidate.name}: not readable ({str(e).splitlines()[0]})")
            continue
        if other.source_checkpoint_sha256 != meta.source_checkpoint_sha256:
            problems.append(f"{candidate.name}: exported from another checkpoint than {model_path.name}")
        elif other.input != meta.input:
            problems.append(f"{candidate.name}: takes another input than {model_path.name}")
        elif not kind.qualifies(other):
            problems.append(f"{candidate.name}: {kind.missing}")
        else:
            gated = kind.precisions(other)
            # Only where its thresholds were set on the same numerics: a gate bounds the ranking,
            # not where a part near the threshold falls (threshold_rules.numerics_mismatch).
            fits = tuple(p for p in gated if numerics_mismatch(other.thresholds, "", p) is None)
            for p in gated:
                if p not in fits:
                    problems.append(f"{candidate.name} in {p}: its thresholds were set on scores of "
                                    f"{other.thresholds.calibrated_on}; to run it so, set them on that configuration "
                                    f"(ffcalib thresholds --model {candidate.name} --normal DIR --backend "
                                    f"{'openvino' if p == 'bf16' else 'onnxruntime-cpu'} --precision {p})")
            if fits:
                variants.append(Variant(candidate, other, fits))
    return variants, problems

"""The self-description every ffrt artifact carries (``ModelMeta``).

It lives inside the ONNX file (``metadata_props`` under the key ``ffrt.meta``, as JSON)
so a model file is all a line PC needs: input size, colour order, score semantics and
thresholds travel with the weights. Thresholds are metadata, not graph constants, so a
line can re-tune them without re-exporting.

The schema is versioned. A file written by a newer ffrt (higher ``schema_version``) is
refused with a message saying to upgrade, never half-understood.

This module is the schema; reading and writing it in ONNX files is ``ffrt.metafile``, and
the runtime's rules about thresholds (overrides, fit to the numerics that run) are
``ffrt.threshold_rules``.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ffcore.modelkinds import DEFAULT_MODEL_KIND, MODEL_KINDS
from ffcore.operating_point import THRESHOLD_METHODS, OperatingPoint

from .errors import ModelFileError

META_KEY = "ffrt.meta"
# 2: head_fit (INT8 files whose flow head was re-fit on their INT8 backbone)
# 3: thresholds.calibrated_on (the backend whose scores set the thresholds)
# 4: precision_gates (reduced-precision runs of this file checked against FP32: ffcalib bf16)
# 5: input.color (luma: the graph reads the luminance only; models trained on grey images),
#    augmentation (what training taught is normal: re-exposures, codec artefacts),
#    precision_gates[].verdicts_changed
# 6: model (the density model behind the head: model.kind fastflow or cflow, cflow's condition)
# 7: thresholds.image_estimate / pixel_estimate (the false-reject rate a threshold holds on new normals)
# 8: precision_gates[].precision "int8" (an INT8 file's own gate: what lets "auto" run it),
#    precision_gates[].map_max_rel optional (INT8 gates do not compare maps)
# 9: score.strides (the image score fuses these feature strides only; the map fuses all)
# 10: flow.feature_pooling (the k x k local mean each scale's features pass before its decoder)
# 11: score.memory_bank (a memory bank's weighted patch distance is part of the score)
# 12: score.memory_bank.map_weight (its distance map is part of the anomaly map); weight may be 0
# Every field added since 1 has a default, so files of older schemas keep loading.
SCHEMA_VERSION = 12


class _Strict(BaseModel):
    # Unknown keys are an error: a typo in a hand-edited threshold must not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


# NaN or inf in any number the runtime computes with makes its decisions meaningless (an
# infinite threshold passes every part), so no float here may be non-finite.
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: Anomaly maps and scores are >= 0 by construction (0.5 * mean z^2, then averages), so a
#: negative threshold would reject every part: thresholds are finite and >= 0. The
#: Detector's setter applies the same rule (threshold_rules.new_thresholds).
ThresholdValue = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class InputSpec(_Strict):
    """What the graph's input tensor expects. Normalization happens inside the graph."""

    name: str = "image"
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    height: int = Field(gt=0, description="Images are resized to this height before inference.")
    width: int = Field(gt=0, description="Images are resized to this width before inference.")
    channels: Literal[3] = 3
    color_order: Literal["RGB"] = "RGB"
    color: Literal["rgb", "luma"] = Field(
        default="rgb",
        description="rgb: the graph reads the three channels. luma: it reduces them to BT.601 luminance first "
        "(a model trained on grey images), so colour noise from a camera or codec does not change scores.",
    )
    resize_interpolation: Literal["area", "linear"] = "area"
    resize_mode: Literal["stretch", "letterbox"] = Field(
        default="stretch",
        description="stretch: every frame is resized to height x width; letterbox: its aspect ratio is kept, "
        "it is centred and the rest is padded with 0 (maps and masks are cropped back before resizing).",
    )
    mean: tuple[Finite, Finite, Finite] = Field(description="Per-channel mean on the 0-1 scale, applied in the graph.")
    std: tuple[Positive, Positive, Positive] = Field(
        description="Per-channel std on the 0-1 scale, applied in the graph (divided by: must be > 0)."
    )


class OutputSpec(_Strict):
    anomaly_map: str = "anomaly_map"
    score: str = "score"


class MemoryBankSpec(_Strict):
    """A memory bank beside the flows (fftrain.memory_bank): what it adds to the image score and
    to the anomaly map."""

    stride: int = Field(gt=0, description="The feature stride of the bank's patches (3x3 neighbourhood means).")
    vectors: int = Field(gt=0, description="Normal patches in the bank.")
    weight: float = Field(ge=0, allow_inf_nan=False, description="Its weight against the flows' score, both "
                          "standardized by the validation normals (0: not in the score).")
    map_weight: float = Field(default=0.0, ge=0, allow_inf_nan=False, description="The weight of its per-patch "
                              "distances, upsampled, in the anomaly map (0: the map is the flows'; every file before "
                              "schema 12).")

    @model_validator(mode="after")
    def _counts_somewhere(self) -> "MemoryBankSpec":
        if not (self.weight > 0 or self.map_weight > 0):
            raise ValueError("a memory bank must weigh in the score or the map (weight or map_weight > 0)")
        return self


class ScoreSpec(_Strict):
    """How the image score is derived from the anomaly map."""

    semantics: Literal["higher_is_more_anomalous"] = "higher_is_more_anomalous"
    map_units: str = Field(
        default="mean per-channel negative log-likelihood, averaged over feature scales",
        description="What one anomaly-map value means.",
    )
    reduction: Literal["max", "topk_mean"] = "topk_mean"
    topk_fraction: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    strides: tuple[int, ...] | None = Field(
        default=None,
        description="Feature strides whose maps, fused as the anomaly map is, the score reduces. None: the "
        "anomaly map itself (every stride; files before schema 9). The returned anomaly map fuses every stride, "
        "so with fewer strides the score is not a reduction of that map.")
    memory_bank: MemoryBankSpec | None = Field(
        default=None,
        description="When set, the score also counts the weighted distance from the image's most unusual patch to "
        "its nearest normal patch, and the map each patch's where map_weight > 0 (None: the flows alone; every "
        "file before schema 11).")


class ThresholdEstimate(_Strict):
    """What is known about a threshold's false-reject rate on NEW normals, from the normals it
    was set on (``ffcore.operating_point``)."""

    method: Literal[THRESHOLD_METHODS] = Field(
        description="order_statistic: the k-th largest normal score (enough normals for the target); tail_model: "
        "the quantile of a normal fit after a Box-Cox transform (too few for an order statistic); largest_score: "
        "the maximum (too few to fit).")
    n: int = Field(gt=0, description="Normal images the threshold was set on.")
    target_frr: float = Field(gt=0, lt=1, allow_inf_nan=False)
    frr_low: float = Field(ge=0, le=1, allow_inf_nan=False, description="Interval of the false-reject rate on new "
                           "normals: lower end.")
    frr_high: float = Field(ge=0, le=1, allow_inf_nan=False, description="Upper end.")
    confidence: float = Field(gt=0, lt=1, allow_inf_nan=False, description="Two-sided confidence of the interval.")
    needed_more: int | None = Field(
        default=None, gt=0, description="More normal images for the order statistic's interval to lie within "
        "[target/2, 2*target] (None: enough).")

    @classmethod
    def of(cls, point: dict) -> "ThresholdEstimate":
        """From ``OperatingPoint.to_dict()`` (the threshold itself is stored beside it)."""
        return cls(**{k: v for k, v in point.items() if k != "threshold"})

    def point(self, threshold: float) -> OperatingPoint:
        """Back to ``ffcore.operating_point.OperatingPoint`` (its ``summary()`` is the one line)."""
        return OperatingPoint.from_dict({**self.model_dump(), "threshold": threshold})


class Thresholds(_Strict):
    """Decision thresholds, in the units of ``score`` and ``anomaly_map``."""

    image: ThresholdValue = Field(description="score > image  ->  the part is rejected as anomalous.")
    pixel: ThresholdValue = Field(description="anomaly_map > pixel  ->  the pixel is in the defect mask.")
    source: str = Field(default="", description="How these thresholds were chosen.")
    calibrated_on: str = Field(
        default="",
        description="The backend whose scores these thresholds were set on (e.g. 'onnxruntime-cpu', 'tensorrt', "
        "'fftrain (PyTorch, FP32)'): FP16 and INT8 numerics differ between backends, so thresholds are best set "
        "on the backend that runs the line. Empty: not recorded (schema 2 and older).",
    )
    image_estimate: ThresholdEstimate | None = Field(
        default=None, description="The image threshold's false-reject rate on new normals (None: not estimated: "
        "schema 6 and older, set by value, or F1-optimal over labelled defects).")
    pixel_estimate: ThresholdEstimate | None = Field(
        default=None, description="The same for the pixel threshold applied to each normal image's largest map value.")


class ScoreStats(_Strict):
    """Statistics of image scores on normal validation images (for 0-1 normalization)."""

    count: int = Field(ge=0)
    mean: Finite
    std: float = Field(ge=0, allow_inf_nan=False)
    min: Finite
    max: Finite
    p50: Finite
    p99: Finite


class BackboneInfo(_Strict):
    name: str
    pretrained: bool = Field(description="False only for test/benchmark models with random weights.")
    weights_sha256: str | None = None


class ModelInfo(_Strict):
    """Which density model sits between the backbone and the head. The runtime runs every kind
    the same way (same input, outputs and head); this says what the map was computed by."""

    kind: Literal[MODEL_KINDS] = Field(
        default=DEFAULT_MODEL_KIND,
        description="fastflow: FastFlow's 2D flows, map 0.5 * mean_c z^2. cflow: CFLOW-AD's flows conditioned on a "
        "positional encoding, map the full negative log-likelihood per channel. Files written before schema 6 "
        "are fastflow.",
    )
    condition_channels: int | None = Field(
        default=None, gt=0, description="cflow: channels of the 2D positional encoding the couplings read.")


class FlowInfo(_Strict):
    """The decoders of every feature scale (``model.kind`` says which)."""

    steps: int = Field(gt=0, description="Coupling steps per feature scale.")
    hidden_ratio: Positive
    hidden_channels: tuple[int, ...] | None = Field(
        default=None,
        description="Subnet hidden channels per feature scale (absent in files written before they were "
        "recorded, whose hidden_ratio counted full feature channels).",
    )
    conv3x3_only: bool
    clamp: Positive
    feature_pooling: int = Field(
        default=1, ge=1,
        description="Side of the local mean (stride 1) each scale's features pass through before its decoder, "
        "inside the graph; 1 = none (files written before it was recorded).",
    )


class AugmentationInfo(_Strict):
    """How the training images were augmented (fftrain): what the model was taught is normal."""

    views: int = Field(ge=0, description="Re-exposed views (gain, gamma, offset, noise, shift) per training image.")
    jpeg_share: float = Field(ge=0, le=1, allow_inf_nan=False,
                              description="Share of those views that also passed through a JPEG round trip "
                              "(0: compression artefacts were never seen in training).")

    def summary(self) -> str:
        if not self.views:
            return "none"
        codec = f", {100 * self.jpeg_share:g}% of them through JPEG" if self.jpeg_share else ", no codec artefacts"
        return f"{self.views} re-exposed views per training image{codec}"


class PrecisionGate(_Strict):
    """A run of this file in a reduced precision, checked against FP32 on real images.

    ``bf16``: the file run in BF16 on OpenVINO (``ffcalib bf16``); ``precision="auto"`` runs
    BF16 only where a passed gate for the very configuration it would run (``keep_fp32``) is
    recorded. ``int8``: an INT8 file's own gate (ffcalib int8, ffexport --int8) on ONNX
    Runtime, the INT8 file against the FP32 model it was quantized from; ``backend="auto"``
    runs an INT8 file next to model.onnx only where it carries a passed one."""

    precision: Literal["bf16", "int8"]
    keep_fp32: Literal["head", "flows", "none"] = Field(
        description="What was not reduced: the anomaly head, the flows and the head, or nothing. INT8: 'flows' = "
        "backbone convolutions INT8 (scope backbone), 'head' = the flows' convolutions too (scope all).")
    passed: bool
    images: int = Field(gt=0)
    defective: int = Field(ge=0)
    data: str = Field(description="Where the images came from (never the test split).")
    spearman: Finite = Field(description="Spearman rank correlation of the image scores with FP32.")
    auroc_fp32: Finite | None = None
    auroc: Finite | None = Field(default=None, description="Image AUROC in this precision (None: one class only).")
    map_max_rel: float | None = Field(default=None, ge=0, allow_inf_nan=False,
                                      description="max |map - map_fp32| / max |map_fp32| over the finite values "
                                      "(None: not compared, INT8 gates).")
    nonfinite: int = Field(default=0, ge=0, description="NaN/inf values in the maps and scores (any fails the gate).")
    verdicts_changed: int | None = Field(
        default=None, ge=0, description="Images whose pass/fail verdict at the file's image threshold differs from "
        "FP32 (gates against the file itself; None: a re-fit head's gate, or recorded before schema 5).")
    bounds: dict[str, Finite] = Field(description="The tolerances applied (min_spearman, max_auroc_diff, max_map_rel).")
    reference: str = Field(description="What it was compared with: this file in FP32, or the FP32 model a re-fit "
                           "head came from.")
    runtime: str = Field(description="Backend, library version and CPU the gate ran on.")
    checked_at: str

    def summary(self) -> str:
        au = (f", image AUROC {self.auroc_fp32:.4f} -> {self.auroc:.4f}"
              if self.auroc is not None and self.auroc_fp32 is not None else "")
        bad = f", {self.nonfinite} non-finite values" if self.nonfinite else ""
        if self.verdicts_changed is not None:
            bad += f", verdicts changed {self.verdicts_changed} of {self.images}"
        maps = "" if self.map_max_rel is None else f", map error {100 * self.map_max_rel:.2f}% of the FP32 peak"
        return (f"{self.precision} with keep_fp32={self.keep_fp32!r} vs {self.reference}, {self.images} images "
                f"({self.data}): Spearman {self.spearman:.4f}{au}{maps}{bad}; bounds {self.bounds}: {'passed' if self.passed else 'FAILED'}")


class ModelMeta(_Strict):
    format: Literal["ffrt.meta"] = "ffrt.meta"
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1)
    input: InputSpec
    outputs: OutputSpec = OutputSpec()
    score: ScoreSpec
    thresholds: Thresholds
    score_stats: ScoreStats | None = None
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    target: Literal["any", "tensorrt", "cpu"] = Field(
        default="any", description="The backend this file's encoding is meant for (INT8 files differ)."
    )
    backbone: BackboneInfo
    model: ModelInfo = ModelInfo()
    flow: FlowInfo
    feature_strides: tuple[Annotated[int, Field(gt=0)], ...]
    head_fit: str = Field(
        default="",
        description="How the flow head was fit when it is not the FP32 model's (INT8 files: re-fit on the features "
        "of this file's own INT8 backbone, with thresholds re-calibrated). Empty: the trained head.",
    )
    augmentation: AugmentationInfo | None = Field(
        default=None, description="How training augmented the normal images (None: not recorded, schema 4 and older).")
    precision_gates: tuple[PrecisionGate, ...] = Field(
        default=(), description="Reduced-precision runs of this file checked against FP32 (ffcalib bf16).")
    batch_max: int | None = Field(default=None, gt=0, description="Largest batch the graph was exported for.")
    opset: int | None = None
    source_checkpoint_sha256: str
    tool_versions: dict[str, str] = {}
    created_at: str

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {v} was written by a newer ffrt (this one reads up to "
                f"{SCHEMA_VERSION}); upgrade ffrt: pip install -U ffrt"
            )
        return v

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str, where: str = "model") -> "ModelMeta":
        """Parse and validate stored metadata; any problem is a ModelFileError.

        Strict: a number written as a string ("0.7") is refused rather than converted, as a
        hand edit that quotes a threshold is a mistake to report, not to guess at. pydantic's
        own JSON parser bounds nesting depth, so absurdly nested input is a validation error,
        not a RecursionError.
        """
        try:
            return cls.model_validate_json(text, strict=True)
        except ValidationError as e:
            raise ModelFileError(f"{where}: its '{META_KEY}' metadata is not usable:\n{readable(e)}\n{FIX_HINT}") from e

    def with_thresholds(self, image: float, pixel: float, source: str, calibrated_on: str = "",
                        image_estimate: ThresholdEstimate | None = None,
                        pixel_estimate: ThresholdEstimate | None = None) -> "ModelMeta":
        # Writing new thresholds writes this ffrt's schema (the file now uses its fields).
        thresholds = Thresholds(image=image, pixel=pixel, source=source, calibrated_on=calibrated_on,
                                image_estimate=image_estimate, pixel_estimate=pixel_estimate)
        return self.model_copy(update={"thresholds": thresholds, "schema_version": SCHEMA_VERSION})


# ffcalib reads the same metadata before it writes thresholds, so it cannot repair a file
# whose metadata is unusable: only a new export can.
FIX_HINT = (
    "The metadata was edited by hand or written by a broken tool: re-export the model with ffexport "
    "(then set its thresholds again with ffcalib thresholds if they had been calibrated)."
)


def readable(e: ValidationError, limit: int = 10) -> str:
    """One line per problem: where, what, and the value found (cut short)."""
    lines = []
    errors = e.errors()
    for err in errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        found = "" if err["type"] in ("missing", "json_invalid") else f" (found {_short(err.get('input'))})"
        lines.append(f"  - {loc}: {err['msg']}{found}")
    if len(errors) > limit:
        lines.append(f"  - ... and {len(errors) - limit} more")
    return "\n".join(lines)


def _short(value: object, width: int = 60) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool)) or value is None else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."

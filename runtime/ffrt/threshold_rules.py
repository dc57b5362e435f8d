"""The runtime's rules about thresholds: how an override is checked, and whether thresholds
fit the numerics that compute the scores."""

from __future__ import annotations

import math

from .errors import InvalidArgumentError
from .meta import Thresholds


def new_thresholds(current: Thresholds, image: float | None, pixel: float | None, source: str) -> Thresholds:
    """``current`` with the given values replaced (None keeps one), each checked: a number,
    finite, >= 0 (InvalidArgumentError otherwise)."""
    def check(value: float | None, name: str, keep: float) -> float:
        if value is None:
            return keep
        if isinstance(value, bool):
            raise InvalidArgumentError(f"{name} threshold must be a number, not {value!r}.")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"{name} threshold must be a number, not {value!r}.") from None
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"{name} threshold must be finite, not {value}: NaN or inf would make every decision meaningless."
            )
        # The metadata schema's rule too (meta.ThresholdValue): maps and scores are >= 0.
        if value < 0:
            raise InvalidArgumentError(
                f"{name} threshold must be >= 0, not {value:g}: anomaly maps and scores are never negative, so it "
                "would reject every part."
            )
        return value

    return Thresholds(
        image=check(image, "image", current.image),
        pixel=check(pixel, "pixel", current.pixel),
        source=source,
    )


def numerics_mismatch(thresholds: Thresholds, backend: str, precision: str) -> str | None:
    """Why ``thresholds`` may not fit scores computed by ``backend`` in ``precision``
    ("fp32", "bf16", "int8+bf16", ...), or None. BF16 arithmetic shifts scores by more
    than the distance of a marginal part from the threshold, so thresholds set on FP32
    scores (by the trainer or a backend running FP32) are flagged when BF16 runs, and the
    other way round. Unrecorded (schema 2 files) is not flagged."""
    if not thresholds.calibrated_on:
        return None
    runs_bf16 = "bf16" in precision.lower()
    set_on_bf16 = "bf16" in thresholds.calibrated_on.lower()
    if runs_bf16 == set_on_bf16:
        return None
    return (
        f"its thresholds were set on scores of {thresholds.calibrated_on}, but this Detector computes in {precision} "
        f"on {backend}; scores differ between FP32 and BF16, so parts near the threshold may be judged "
        f"differently. Set them on this configuration: ffcalib thresholds --model FILE --normal DIR "
        f"[--defects DIR] --backend {backend} --precision {'bf16' if runs_bf16 else 'fp32'}"
    )

"""Decision thresholds calibrated on the exported model, written into its metadata.

Images are scored through ``ffrt.Detector`` (the runtime path that ships), on the backend
that will run the line: by default the one ``Detector(..., backend="auto")`` picks on this
machine (ONNX Runtime CPU computes FP16 regions in FP32 and quantizes INT8 biases its own
way, so a threshold set there does not fit TensorRT's numerics exactly). The backend is
recorded in the metadata (``thresholds.calibrated_on``). Then:

- image threshold: without defects, the threshold whose false-reject rate on NEW normals is
  ``target_frr`` (``ffcore.operating_point``: an order statistic with enough normals, a tail
  model below, with the interval of that rate and how many more normals the target needs);
  with labelled defects, the F1-optimal threshold over normals + defects (``f1_max``).
- pixel threshold: without masks, the same rule over each normal image's MAXIMUM
  anomaly-map value (the trainer's rule): a normal image has no mask pixel at all with
  probability about 1 - target_frr. Defect images without masks do not move it (their
  pixels are unlabelled). With masks, the pixel-F1-optimal threshold over every pixel of
  the normal images (all negative) and the masked defect images.
- score_stats (used for the 0-1 normalized score) are recomputed from the normal scores.

The metadata is replaced atomically (``ffrt.metafile.write_onnx_meta``: temp file + fsync +
rename), so a crash leaves the old model file intact.

``ffcore.metrics`` (torch-free) keeps one definition of every threshold rule across
training and calibration.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffcore.images import DataError, read_mask
from ffcore.metrics import f1_max, precision_recall_at_threshold, score_statistics
from ffcore.operating_point import OperatingPoint, operating_point
from ffcore.progress import progress as progress_bar
from ffrt.errors import FFRTError, ModelFileError
from ffrt.meta import ScoreStats, ThresholdEstimate
from ffrt.metafile import read_onnx_meta, write_onnx_meta

from ffcore.files import IMAGE_SUFFIXES

from .images import CalibError

BATCH = 8
#: Normal scores closer together than this (relative) count as one score: copies of one image
#: differ only by the backend's batch-vs-single rounding (about 1e-6), real normals by percents.
NO_SPREAD_REL = 1e-4


@dataclass
class ThresholdReport:
    model: str
    image_threshold: float
    pixel_threshold: float
    image_rule: str
    pixel_rule: str
    normal_count: int
    defect_count: int
    normal_frr: float  # fraction of the given normals rejected at the new image threshold
    defect_recall: float | None
    image_f1: float | None
    previous: tuple[float, float]
    backend: str = ""  # the backend the images were scored with
    image_estimate: OperatingPoint | None = None  # None: F1-optimal over defects (no rate to estimate)
    pixel_estimate: OperatingPoint | None = None  # None: pixel-F1-optimal with masks
    histogram_png: str | None = None
    html: str | None = None
    written: bool = False
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"thresholds for {self.model} (scored with {self.backend}):",
            f"  image {self.image_threshold:.6g} ({self.image_rule}; was {self.previous[0]:.6g})",
            f"  pixel {self.pixel_threshold:.6g} ({self.pixel_rule}; was {self.previous[1]:.6g})",
            f"  on these images: {self.normal_count} normals, false-reject rate {self.normal_frr:.4f}",
        ]
        lines += [f"  {which} {point.summary()}" for which, point in
                  (("image", self.image_estimate), ("pixel", self.pixel_estimate)) if point is not None]
        if self.defect_count:
            lines.append(f"  {self.defect_count} defects: recall {self.defect_recall:.4f}, F1 {self.image_f1:.4f}")
        if self.histogram_png:
            lines.append(f"  histogram: {self.histogram_png}")
        if self.html:
            lines.append(f"  review page: {self.html}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append("  written into the model's metadata" if self.written else "  (not written)")
        return "\n".join(lines)


def score_paths(detector, paths: list[Path], progress: bool = True, desc: str = "scoring") -> tuple[np.ndarray, list[np.ndarray]]:
    """(scores [N], anomaly maps at the model size) of image files, through the Detector."""
    scores, maps = [], []
    for i in progress_bar(range(0, len(paths), BATCH), desc=desc, unit="batch", enabled=progress):
        try:
            results = detector.predict_batch(paths[i : i + BATCH], batch_size=min(BATCH, detector.meta.batch_max or BATCH))
        except FFRTError as e:
            raise CalibError(str(e)) from e
        for r in results:
            scores.append(r.score)
            maps.append(r.anomaly_map)
    return np.asarray(scores, dtype=np.float64), maps


def _mask_for(image: Path, masks_dir: Path, hw: tuple[int, int]) -> np.ndarray:
    for cand in (masks_dir / f"{image.stem}_mask.png", *(masks_dir / f"{image.stem}{s}" for s in sorted(IMAGE_SUFFIXES))):
        if cand.is_file():
            try:
                return read_mask(cand, hw)
            except DataError as e:
                raise CalibError(str(e)) from e
    raise CalibError(f"{masks_dir}: no mask for {image.name} (expected {image.stem}_mask.png or {image.stem}.png)")


def score_stats(scores: np.ndarray) -> ScoreStats:
    return ScoreStats(**score_statistics(scores))


def calibrate_thresholds(
    model_path: str | os.PathLike,
    normal_paths: list[Path],
    defect_paths: list[Path] | None = None,
    masks_dir: str | os.PathLike | None = None,
    *,
    target_frr: float = 0.01,
    write: bool = True,
    histogram_png: str | os.PathLike | None = None,
    threads: int | None = None,
    progress: bool = True,
    backend: str = "auto",
    precision: str = "auto",
    html: str | os.PathLike | None = None,
    data: str = "",
) -> ThresholdReport:
    """Score the images with ffrt.Detector on ``backend``, choose thresholds (see module doc), write them atomically."""
    from ffrt import Detector

    model_path = Path(model_path)
    try:
        meta = read_onnx_meta(model_path)
    except ModelFileError as e:
        raise CalibError(str(e)) from e
    if not (0.0 < target_frr < 1.0):
        # 0 cannot be promised on new normals: no finite threshold has a zero rate.
        raise CalibError(f"--target-frr must be in (0, 1), not {target_frr}")
    if not normal_paths:
        raise CalibError("no normal images given")
    defect_paths = list(defect_paths or [])
    det = Detector(model_path, backend=backend, threads=threads, resize_outputs=False, precision=precision)
    normal_scores, normal_maps = score_paths(det, list(normal_paths), progress, "scoring normals")
    defect_scores, defect_maps = (
        score_paths(det, defect_paths, progress, "scoring defects") if defect_paths else (np.zeros(0), [])
    )
    if not np.all(np.isfinite(normal_scores)) or not np.all(np.isfinite(defect_scores)):
        raise CalibError("the model returned NaN/inf scores; its thresholds cannot be calibrated")

    n_normal = len(normal_scores)
    if np.ptp(normal_scores) <= NO_SPREAD_REL * max(abs(float(np.median(normal_scores))), 1e-12):
        # No spread: the threshold would be that one score, and the operators' normalized
        # score (scaled by the normal scores' spread) would be undefined on the line.
        what = "the only normal image" if n_normal == 1 else f"all {n_normal} normal images (copies of one image?)"
        raise CalibError(
            f"{what} scored {float(normal_scores[0]):.6g}: with no spread among normal scores no threshold can be "
            "set. Give different normal images from the line, at least "
            f"{_normals_needed(target_frr)} for a false-reject target of {target_frr:g}; nothing was written."
        )
    f1 = recall = image_point = pixel_point = None
    if defect_paths:
        labels = np.r_[np.zeros(n_normal, np.int64), np.ones(len(defect_scores), np.int64)]
        scores = np.r_[normal_scores, defect_scores]
        f1, image_t = f1_max(labels, scores)
        _, recall = precision_recall_at_threshold(labels, scores, image_t)
        image_rule = f"F1-optimal over {n_normal} normals + {len(defect_scores)} defects"
    else:
        image_point = operating_point(normal_scores, target_frr)
        image_t = image_point.threshold
        image_rule = f"target false-reject rate {target_frr} on {n_normal} normals"

    if masks_dir is not None and defect_paths:
        hw = (meta.input.height, meta.input.width)
        masks = [np.zeros(hw, bool)] * n_normal + [_mask_for(p, Path(masks_dir), hw) for p in defect_paths]
        maps = np.stack(list(normal_maps) + list(defect_maps))
        _, pixel_t = f1_max(np.stack(masks).ravel(), maps.ravel())
        pixel_rule = "pixel-F1-optimal with masks"
    else:
        pixel_point = operating_point(np.array([m.max() for m in normal_maps]), target_frr)
        pixel_t = pixel_point.threshold
        pixel_rule = f"target false-reject rate {target_frr} on each normal image's max map value"

    frr = float(np.mean(normal_scores > image_t))
    report = ThresholdReport(
        model=str(model_path),
        image_threshold=float(image_t),
        pixel_threshold=float(pixel_t),
        image_rule=image_rule,
        pixel_rule=pixel_rule,
        normal_count=n_normal,
        defect_count=len(defect_scores),
        normal_frr=frr,
        defect_recall=recall,
        image_f1=f1,
        previous=(meta.thresholds.image, meta.thresholds.pixel),
        backend=_calibrated_on(det),
        image_estimate=image_point,
        pixel_estimate=pixel_point,
    )
    if not defect_paths and n_normal < _normals_needed(target_frr):
        report.warnings.append(
            f"only {n_normal} normal images: a false-reject rate of {target_frr:g} cannot be measured on fewer than "
            f"{_normals_needed(target_frr)}, so the image threshold is extrapolated "
            f"({image_point.method.value.replace('_', ' ')}; its interval is above). Calibrate on more normal images "
            "from the line."
        )
    if histogram_png is not None and defect_paths:
        try:
            report.histogram_png = str(write_histogram(histogram_png, normal_scores, defect_scores, image_t))
        except OSError as e:
            raise ThresholdsNotWritten(report, Path(histogram_png), e) from e
    if write:
        new = meta.with_thresholds(float(image_t), float(pixel_t), f"ffcalib: image {image_rule}; pixel {pixel_rule}",
                                   calibrated_on=_calibrated_on(det), image_estimate=_estimate(image_point),
                                   pixel_estimate=_estimate(pixel_point))
        new = new.model_copy(update={"score_stats": score_stats(normal_scores)})
        try:
            write_onnx_meta(model_path, new)
        except OSError as e:  # full disk, read-only folder, file size limit: after all the scoring
            raise ThresholdsNotWritten(report, model_path, e) from e
        report.written = True
    if html is not None:
        from .review import write_calibration_page

        report.html = str(write_calibration_page(
            html, det, model_path, normal_paths, normal_scores, defect_paths, defect_scores,
            masks if masks_dir is not None and defect_paths else None, float(image_t), float(pixel_t),
            _calibrated_on(det), data or str(Path(normal_paths[0]).parent), report.written, report.previous))
    return report


def _estimate(point: OperatingPoint | None) -> ThresholdEstimate | None:
    return None if point is None else ThresholdEstimate.of(point.to_dict())


def _normals_needed(target_frr: float) -> int:
    """Normal images needed for a false-reject rate of ``target_frr`` to be one image or more."""
    return max(2, math.ceil(1.0 / target_frr)) if target_frr > 0 else 2


class ThresholdsNotWritten(CalibError):
    """The thresholds were computed but a file could not be written; ``report`` holds them,
    so the caller can still show them (the scoring is not lost with the write)."""

    def __init__(self, report: ThresholdReport, path: Path, error: OSError) -> None:
        self.report = report
        super().__init__(
            f"{path}: cannot write ({error.strerror or error}); the model file is unchanged. The computed thresholds "
            f"are image {report.image_threshold:.6g}, pixel {report.pixel_threshold:.6g}: free space or make "
            f"{path.parent} writable and run again, or use them as they are with "
            f"--image-threshold {report.image_threshold:.6g} --pixel-threshold {report.pixel_threshold:.6g} "
            "(ffrt detect / ffrt run)."
        )


def write_histogram(path, normal_scores, defect_scores, threshold: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    all_s = np.r_[normal_scores, defect_scores]
    bins = np.linspace(all_s.min(), all_s.max(), 40)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(normal_scores, bins=bins, alpha=0.6, label=f"normal (n={len(normal_scores)})", color="tab:blue")
    ax.hist(defect_scores, bins=bins, alpha=0.6, label=f"defect (n={len(defect_scores)})", color="tab:red")
    ax.axvline(threshold, color="k", linestyle="--", label=f"image threshold {threshold:.4g}")
    ax.set_xlabel("image score (higher = more anomalous)")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _calibrated_on(det) -> str:
    """The backend, and its precision where it chose a reduced one at run time (BF16 scores
    differ from FP32 ones: thresholds set on one are best used on the same)."""
    return f"{det.backend_name} ({det.precision})" if "bf16" in det.precision else det.backend_name

"""resize_outputs="flagged" (what ``ffrt run`` uses): maps and masks at the frame's size only for
frames that fail or have a pixel above the pixel threshold, at the model size for the others.
On real frames every score, verdict and region equals what frame-size outputs give
(resize_outputs=True), and a frame comes back small only where its mask is empty at any size."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ffrt import Detector
from ffrt.cli import main

FRAME = (450, 600)  # rows, columns: a non-square frame, stretched to the 64x64 model


@pytest.fixture(scope="module")
def frames(elpv_split):
    cells = elpv_split.val[:6] + [s for s in elpv_split.test if s.label == 1][:6]
    return [cv2.resize(cv2.imread(str(s.path), cv2.IMREAD_COLOR), FRAME[::-1], interpolation=cv2.INTER_CUBIC)
            for s in cells]


def _between(values, k):
    v = sorted(values)
    return (v[k - 1] + v[k]) / 2


def _model_maps(model, frames, **thresholds):
    with Detector(model, threads=1, resize_outputs=False, **thresholds) as det:
        return [r.anomaly_map for r in det.predict_batch(frames)]


def _compare(model, frames, **thresholds):
    with Detector(model, threads=1, **thresholds) as full, \
            Detector(model, threads=1, resize_outputs="flagged", **thresholds) as flagged:
        return full.predict_batch(frames), flagged.predict_batch(frames)


def test_a_passing_frame_with_pixels_over_the_threshold_is_lifted_and_the_others_stay_small(tiny_onnx, frames):
    """Every frame passes (image threshold above every score); the pixel threshold lies between
    the frames' map peaks, so some frames have pixels over it and some none."""
    with Detector(tiny_onnx, threads=1) as det:
        scores = [r.score for r in det.predict_batch(frames)]
    peaks = [float(m.max()) for m in _model_maps(tiny_onnx, frames)]
    thresholds = {"image_threshold": max(scores) + 1.0, "pixel_threshold": _between(peaks, len(peaks) // 2)}
    full, flagged = _compare(tiny_onnx, frames, **thresholds)
    lifted = 0
    for x, y, peak in zip(full, flagged, peaks):
        assert not x.is_anomalous and not y.is_anomalous and y.score == x.score
        assert y.regions == x.regions
        if peak > thresholds["pixel_threshold"]:
            lifted += 1
            assert y.anomaly_map.shape == y.mask.shape == FRAME and np.array_equal(y.mask, x.mask)
        else:
            assert y.anomaly_map.shape == y.mask.shape == (64, 64)
            assert not x.mask.any() and not y.mask.any() and x.regions == ()
    assert 0 < lifted < len(frames)
    assert any(x.regions for x in full)  # the lifted frames' regions were compared, not only empty ones


def test_a_failing_frame_is_at_frame_size_even_with_an_empty_mask(tiny_onnx, frames):
    with Detector(tiny_onnx, threads=1) as det:
        scores = [r.score for r in det.predict_batch(frames)]
    peaks = [float(m.max()) for m in _model_maps(tiny_onnx, frames)]
    thresholds = {"image_threshold": _between(scores, len(scores) // 2), "pixel_threshold": max(peaks) + 1.0}
    full, flagged = _compare(tiny_onnx, frames, **thresholds)
    failed = [y for y in flagged if y.is_anomalous]
    assert 0 < len(failed) < len(frames)
    for x, y in zip(full, flagged):
        assert y.is_anomalous == x.is_anomalous and not y.mask.any()
        assert y.anomaly_map.shape == (FRAME if y.is_anomalous else (64, 64))


def test_ffrt_run_records_the_regions_and_pictures_of_frame_size_outputs(tiny_onnx, frames, tmp_path):
    """ffrt run (flagged) writes the regions Detector(resize_outputs=True) finds, and frame-size
    masks of the rejected frames."""
    folder = tmp_path / "cam"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), f)
    with Detector(tiny_onnx, threads=1) as det:
        scores = [r.score for r in det.predict_batch(frames)]
    peaks = [float(m.max()) for m in _model_maps(tiny_onnx, frames)]
    image_t, pixel_t = _between(scores, len(scores) // 2), _between(peaks, len(peaks) // 3)
    out = tmp_path / "out"
    assert main(["run", str(tiny_onnx), str(folder), "--out", str(out), "--threads", "1", "--masks",
                 "--image-threshold", str(image_t), "--pixel-threshold", str(pixel_t)]) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    full, _ = _compare(tiny_onnx, frames, image_threshold=image_t, pixel_threshold=pixel_t)
    assert len(records) == len(full)
    for r, x in zip(records, full):
        assert r["verdict"] == ("FAIL" if x.is_anomalous else "PASS")
        # Geometry exactly; each peak within float noise: ffrt run batches frames as they arrive,
        # and a backend's kernels for another batch size round the last bit differently.
        expected = [g.to_dict() for g in x.regions]
        assert [{k: v for k, v in g.items() if k != "peak_score"} for g in r["regions"]] == \
            [{k: v for k, v in g.items() if k != "peak_score"} for g in expected]
        assert [g["peak_score"] for g in r["regions"]] == pytest.approx([g["peak_score"] for g in expected], rel=1e-5)
        if x.is_anomalous:
            mask = cv2.imread(str(out / r["mask"]), cv2.IMREAD_GRAYSCALE)
            assert mask.shape == FRAME and np.array_equal(mask > 0, x.mask)
    assert any(r["regions"] for r in records if r["verdict"] == "PASS")

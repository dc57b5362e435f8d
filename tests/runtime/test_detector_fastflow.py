"""The Detector on a REAL exported FastFlow (trained on real ELPV cells by tests/conftest.py)."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from ffrt import Detector, InvalidImageError
from ffcore import synthetic


@pytest.fixture(scope="module")
def detector(tiny_onnx):
    # ONNX Runtime, as the graph run directly below: "auto" may pick OpenVINO on another CPU,
    # whose FP32 scores differ by ~1e-5 (tests/runtime/test_openvino.py holds that parity).
    return Detector(tiny_onnx, backend="onnxruntime-cpu")


def test_result_contract_on_real_cells(detector, elpv_split):
    paths = [str(s.path) for s in elpv_split.test[:3]]
    results = detector.predict_batch(paths)
    assert len(results) == 3
    for r in results:
        assert r.anomaly_map.shape == (300, 300) and r.anomaly_map.dtype == np.float32  # the cell's own size
        assert r.mask.shape == (300, 300) and r.mask.dtype == bool
        assert np.isfinite(r.score) and r.latency_ms > 0
        assert r.is_anomalous == (r.score > detector.thresholds.image)
        assert np.array_equal(r.mask, r.anomaly_map > detector.thresholds.pixel)


def test_scores_equal_the_graph_run_directly(detector, tiny_onnx, elpv_split):
    """The runtime's preprocessing (decode, resize, gray->RGB) is the trainer's: same bytes, same score."""
    from fftrain.data import load_batch

    samples = elpv_split.test[:4]
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    _, expected = session.run(None, {"image": load_batch(samples, 64)})
    got = [detector(str(s.path)).score for s in samples]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gray_and_bgr_inputs_agree(detector, elpv_split):
    gray = cv2.imread(str(elpv_split.test[0].path), cv2.IMREAD_GRAYSCALE)
    bgr = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    assert detector(gray).score == pytest.approx(detector(bgr).score, rel=1e-6)
    assert detector(gray.astype(np.float32) / 255.0).score == pytest.approx(detector(gray).score, rel=1e-6)


@pytest.fixture(scope="module")
def flows_map_detector(elpv_split, tmp_path_factory):
    """The tiny model without a memory bank: at its 64x64 input the bank's stride-16 grid is 4x4
    and each 3x3-mean patch spans most of the cell, so a bank in the map (conftest's model has
    one) raises it everywhere a little; what is checked here is where the flows' map rises."""
    from ffexport.cli import main
    from fftrain.config import ModelConfig
    from fftrain.train import TrainSettings, train_and_save

    out = tmp_path_factory.mktemp("flows_map")
    config = ModelConfig(image_size=(64, 64), flow_steps=2, hidden_ratio=1.0, memory_bank="off")
    train_and_save(config, elpv_split, TrainSettings(epochs=2, batch_size=16, progress=False), out / "model.pt",
                   log=lambda _: None)
    assert main(["--no-bf16", "--ckpt", str(out / "model.pt"), "--out", str(out), "--batch-max", "8"]) == 0
    return Detector(out / "model.onnx", backend="onnxruntime-cpu")


def test_a_synthetic_defect_shows_up_where_it_is(flows_map_detector, elpv_split):
    """Synthetic defect (a dark disc, like an inactive cell area, drawn on a real normal cell):
    the map rises inside it and the map is returned in the cell's own coordinates. (Whether the
    image score separates defects is the trained model's accuracy, measured by the demo; this
    tiny 2-epoch model only has to localize.)"""
    detector = flows_map_detector
    cell = cv2.imread(str(elpv_split.val[0].path), cv2.IMREAD_GRAYSCALE)
    canvas = np.zeros_like(cell)
    cv2.circle(canvas, (200, 100), 40, 255, -1)
    damaged = np.where(canvas > 0, 10, cell).astype(np.uint8)
    clean_r, damaged_r = detector(cell), detector(damaged)
    inside, outside = canvas > 0, cv2.dilate(canvas, np.ones((61, 61), np.uint8)) == 0
    rise = damaged_r.anomaly_map - clean_r.anomaly_map
    assert rise[inside].mean() > 5 * abs(rise[outside].mean())
    mirrored = cv2.flip(damaged, 1)  # the disc moves to the other side: so does the rise
    rise_mirrored = detector(mirrored).anomaly_map - detector(cv2.flip(cell, 1)).anomaly_map
    assert rise_mirrored[cv2.flip(canvas, 1) > 0].mean() > 5 * abs(rise_mirrored[cv2.flip(outside.astype(np.uint8), 1) > 0].mean())


def test_bad_input_then_good_input(detector, elpv_split):
    with pytest.raises(InvalidImageError):
        detector(np.zeros((0, 10), np.uint8))
    with pytest.raises(InvalidImageError, match="NaN"):
        detector(np.full((50, 50), np.nan, np.float32))
    assert np.isfinite(detector(str(elpv_split.test[0].path)).score)


def test_latency_stats_are_recorded(tiny_onnx, elpv_split):
    det = Detector(tiny_onnx)
    det.predict_batch([str(s.path) for s in elpv_split.test[:8]], batch_size=4)
    det(str(elpv_split.test[0].path))
    stats = det.stats
    assert stats.count == 2 and stats.images == 9  # a predict_batch call counts once, with all its images
    assert 0 < stats.p50_ms <= stats.p90_ms <= stats.p99_ms and stats.fps > 0

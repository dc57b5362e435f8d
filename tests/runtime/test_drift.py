"""Drift monitoring (ffrt.drift, Detector.health): the bounds on hand-computed numbers, then
real ELPV normals against the same normals re-exposed, through the real ONNX Runtime."""

from __future__ import annotations

import logging
import math
import shutil

import cv2
import numpy as np
import pytest

from ffrt import Detector, Health, InvalidArgumentError
from ffrt.drift import DriftMonitor, rejects_allowed, share_limit, target_frr_from_source
from ffrt.meta import ScoreStats

STATS = ScoreStats(count=100, mean=1.0, std=0.2, min=0.5, max=2.0, p50=1.0, p99=1.6)


def test_target_frr_is_read_from_what_fftrain_and_ffcalib_write():
    assert target_frr_from_source("validation normals (n=12), target false-reject rate 0.02") == 0.02
    assert target_frr_from_source(
        "ffcalib: image target false-reject rate 0.01 on 100 normals; pixel target false-reject rate 0.01 on each "
        "normal image's max map value"
    ) == 0.01
    assert target_frr_from_source("ffcalib: image F1-optimal over 50 normals + 20 defects; pixel ...") is None
    assert target_frr_from_source("set at run time (set_thresholds)") is None


def test_rejects_allowed_follows_threshold_at_frr():
    from ffcore.metrics import threshold_at_frr

    for frr, n in [(0.02, 12), (0.02, 100), (0.01, 100), (0.1, 10), (0.05, 37), (0.3, 7)]:
        scores = np.arange(n, dtype=float)
        above = int((scores > threshold_at_frr(scores, frr)).sum())  # distinct scores: exactly k lie above
        assert rejects_allowed(frr, n) == above
    assert (rejects_allowed(0.02, 12), rejects_allowed(0.02, 100), rejects_allowed(0.1, 10)) == (0, 2, 1)


def test_median_bound_and_hysteresis():
    # sd of (recent median - p50) = 1.2533 * 0.2 * sqrt(1/50 + 1/100) = 0.043416; 5 sigma = 0.21708
    mon = DriftMonitor(STATS, threshold=1.5, target_frr=None, window=50)
    mon.add([1.2] * 50)
    h = mon.health()
    assert h.state == "ok" and h.median_bounds == pytest.approx((1 - 0.21708, 1 + 0.21708), abs=1e-5)
    assert h.expected_share is None and h.share_bound is None  # no calibrated false-reject rate: test off
    mon.add([1.22] * 50)
    assert mon.health().state == "drift" and "above the range" in mon.health().reason
    mon.add([1.2] * 50)  # back inside the bound but not inside 0.8 of it (1.17366): still drift
    assert mon.health().state == "drift"
    mon.add([1.15] * 50)
    assert mon.health().state == "ok"
    mon.add([0.75] * 50)
    assert mon.health().state == "drift" and "below the range" in mon.health().reason


def _beta_binomial_tail(n: int, a: float, b: float, m: int) -> float:
    """P(X > m), X ~ Binomial(n, p), p ~ Beta(a, b): by numerical integration over p."""
    p = np.linspace(0.0, 1.0, 400_001)[1:-1]
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    density = np.exp((a - 1) * np.log(p) + (b - 1) * np.log1p(-p) - log_beta)
    tail = sum(math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(m + 1, n + 1))
    return float(np.trapezoid(density * tail, p))


def test_share_limit_is_the_beta_binomial_quantile():
    tail = 0.5 * math.erfc(5 / math.sqrt(2))  # one-sided 5 sigma: 2.87e-7
    for n, a, b in [(50, 3.0, 98.0), (200, 1.0, 12.0), (100, 2.0, 99.0)]:
        m = share_limit(n, a, b, tail)
        assert _beta_binomial_tail(n, a, b, m) <= tail * 1.01 < _beta_binomial_tail(n, a, b, m - 1)


def test_share_above_threshold_alone_raises_drift():
    # target 0.02 on 100 normals: k = 2 above the threshold, share of new normals ~ Beta(3, 98).
    mon = DriftMonitor(STATS, threshold=1.5, target_frr=0.02, window=50)
    m = share_limit(50, 3.0, 98.0, 0.5 * math.erfc(5 / math.sqrt(2)))
    mon.add([1.6] * m + [1.0] * (50 - m))  # median at calibration, m above the threshold: allowed
    h = mon.health()
    assert h.state == "ok" and h.expected_share == pytest.approx(3 / 101) and h.share_bound == pytest.approx(m / 50)
    mon.add([1.6] * (m + 1) + [1.0] * (49 - m))
    h = mon.health()
    assert h.state == "drift" and h.recent_median == 1.0 and "above the image threshold" in h.reason
    mon.add([float("nan")] * 50)  # broken measurements count as above everything
    assert mon.health().share_above_threshold == 1.0


def test_no_verdict_without_statistics_or_enough_scores():
    mon = DriftMonitor(None, threshold=1.0, target_frr=0.02, window=50)
    mon.add([1.0] * 50)
    h = mon.health()
    assert h.state == "insufficient_data" and "score_stats" in h.reason
    mon = DriftMonitor(STATS, threshold=1.5, target_frr=0.02, window=200)
    mon.add([5.0] * 29)
    assert mon.health().state == "insufficient_data" and mon.health().count == 29
    mon.add([5.0])
    assert mon.health().state == "drift"
    with pytest.raises(InvalidArgumentError, match="drift_window"):
        DriftMonitor(STATS, 1.5, None, window=0)


# --- real images -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tiny_onnx, tmp_path_factory):
    """A copy of the tiny model calibrated by ffcalib on 100 ELPV normals it never trained on
    (the session model saw the first 48 training normals), at a target false-reject rate of 2 %."""
    from ffcalib.thresholds import calibrate_thresholds
    from ffcore.data import elpv

    split = elpv("mono")  # the whole split: the session fixture's copy is cut to 48 training images
    path = tmp_path_factory.mktemp("drift") / "model.onnx"
    shutil.copy(tiny_onnx, path)
    calibrate_thresholds(path, [s.path for s in split.train[48:148]], target_frr=0.02, progress=False,
                         backend="onnxruntime-cpu")
    normals = [cv2.imread(str(s.path), cv2.IMREAD_COLOR) for s in split.test if s.label == 0]
    return path, normals


def test_reexposed_normals_are_reported_as_drift(calibrated, caplog):
    from ffcore.synthetic import reexpose

    path, normals = calibrated
    det = Detector(path, backend="onnxruntime-cpu", drift_window=len(normals))
    assert det.health().state == "insufficient_data"
    assert det.meta.score_stats.count == 100 and det.health().expected_share == pytest.approx(3 / 101)
    with caplog.at_level(logging.WARNING, logger="ffrt"):
        det.predict_batch(normals)  # held-out normals: the line as calibrated
        h = det.health()
        assert h.state == "ok", h.reason
        assert h.count == len(normals) and h.median_bounds[0] < h.recent_median < h.median_bounds[1]
        assert "drift" not in caplog.text
        # The same parts under a lamp 1.8x brighter, through submit (every path feeds the monitor).
        futures = [det.submit(reexpose(x, gain=1.8)) for x in normals]
        for f in futures:
            f.result(60)
        h = det.health()
        assert h.state == "drift" and h.recent_median > h.median_bounds[1]
        assert h.share_above_threshold > h.share_bound  # both tests see it
        assert "ffrt: score drift" in caplog.text
        det.predict_batch(normals)  # the lamp fixed
        assert det.health().state == "ok"
        assert "scores back to ok" in caplog.text
    assert isinstance(h, Health) and h.to_dict()["median_bounds"] == list(h.median_bounds)
    det.close()


def test_thresholds_changed_at_run_time_turn_the_share_test_off(calibrated):
    path, _ = calibrated
    det = Detector(path, backend="onnxruntime-cpu")
    assert det.health().expected_share is not None
    det.set_thresholds(pixel=det.thresholds.pixel * 1.1)  # the image threshold is unchanged: still calibrated
    assert det.health().expected_share is not None
    det.set_thresholds(image=det.thresholds.image * 1.1)
    assert det.health().expected_share is None and det.health().threshold == pytest.approx(det.thresholds.image)

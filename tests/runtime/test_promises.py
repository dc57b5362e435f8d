"""Promises no test held before issue 23's mutation check, each against an expectation
worked out here by hand (never computed by the code under test):

- the image decision at exactly the threshold: ``score > T`` is FAIL, ``score == T`` PASS
  (a calibrated threshold IS a normal image's score);
- ``Detector.submit`` batches under concurrent load;
- the Prometheus gauges hold exact values (reject rate, not pass rate);
- letterbox centring with odd padding (the extra row goes below / right).

The red-channel model (tests/runtime/conftest.py): the score is max(R) / 255, so a pure red
image scores exactly 1.0 and a pure blue one exactly 0.0.
"""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest

from conftest import solid_bgr
from ffrt import Detector
from ffrt.meta import InputSpec
from ffrt.preprocess import ImageLimits, prepare_batch

RED_BGR, BLUE_BGR = (0, 0, 255), (255, 0, 0)


@pytest.mark.parametrize("bgr, score", [(RED_BGR, 1.0), (BLUE_BGR, 0.0)], ids=["red", "blue"])
def test_a_score_equal_to_the_image_threshold_passes(red_model, bgr, score):
    with Detector(red_model, threads=1, image_threshold=score) as det:
        r = det(solid_bgr(40, 50, bgr))
    assert r.score == score
    assert r.is_anomalous is False  # score > threshold is FAIL; equal is not greater


def test_a_score_just_above_the_image_threshold_fails(red_model):
    with Detector(red_model, threads=1, image_threshold=0.999) as det:
        assert det(solid_bgr(40, 50, RED_BGR)).is_anomalous is True


def test_a_map_value_equal_to_the_pixel_threshold_is_not_in_the_mask(red_model):
    red = solid_bgr(40, 50, RED_BGR)  # every map value is exactly 1.0
    with Detector(red_model, threads=1, pixel_threshold=1.0) as det:
        assert int(det(red).mask.sum()) == 0
    with Detector(red_model, threads=1, pixel_threshold=0.999) as det:
        assert int(det(red).mask.sum()) == 40 * 50


def test_submit_batches_frames_that_arrive_together(red_model):
    # 32 frames submitted back to back (well within max_delay_ms of each other): the batcher
    # must put several in one backend call. At most 32 / 8 = 4 full batches are needed; a
    # batcher that never batches makes 32 calls of 1.
    frames = [solid_bgr(40, 50, RED_BGR if i % 2 else BLUE_BGR) for i in range(32)]
    with Detector(red_model, threads=1, max_batch=8, max_delay_ms=500) as det:
        futures = [det.submit(f, source="cam1") for f in frames]
        results = [f.result(timeout=30) for f in futures]
        stats = det.pipeline_stats()
    assert [r.score for r in results] == [1.0 if i % 2 else 0.0 for i in range(32)]
    assert stats.batches <= 8 and stats.mean_batch_size >= 4.0, stats


def test_prometheus_gauges_hold_exact_values(tmp_path):
    pytest.importorskip("prometheus_client", reason="needs the optional extra 'metrics' (pip install \"ffrt[metrics]\")")
    from ffrt.line.metrics import RunMetrics
    from ffrt.line.runner import RECENT_S, SourceState
    from ffrt.line.sources import SourceSpec

    state = SourceState(SourceSpec(name="cam1", kind="IMAGES", target=str(tmp_path)))
    for rejected in (True, False, True, True):  # 3 FAIL, 1 PASS
        state.scored_now(rejected)
    started = time.monotonic() - 10 * RECENT_S  # running for longer than the recent window
    metrics = RunMetrics(lambda: {"queue_depth": 2, "sources": {"cam1": state.live(started)}})
    for outcome in ("fail", "pass", "fail", "fail", "error"):
        metrics.observe("cam1", outcome)
    port = metrics.serve("127.0.0.1", 0)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        metrics.close()

    def value(line_start: str) -> float:
        m = re.search(rf"^{re.escape(line_start)} (\S+)$", body, re.M)
        assert m, f"{line_start} not in:\n{body}"
        return float(m.group(1))

    assert value('ffrt_reject_rate{source="cam1"}') == 0.75  # 3 of 4
    assert value('ffrt_throughput_fps{source="cam1"}') == pytest.approx(4 / RECENT_S, rel=1e-12)
    assert value('ffrt_frames_total{outcome="fail",source="cam1"}') == 3.0
    assert value('ffrt_frames_total{outcome="pass",source="cam1"}') == 1.0
    assert value('ffrt_frames_total{outcome="error",source="cam1"}') == 1.0
    assert value("ffrt_queue_depth") == 2.0
    assert value('ffrt_source_up{source="cam1"}') == 1.0


# Letterbox with odd padding, worked by hand: a solid colour image keeps its colour through
# the INTER_AREA resize, so the model input is that colour inside the placed rectangle and
# 0 around it. The odd leftover row or column goes to the bottom / right.
#   (frame h, w) -> model (H, W): scale, resized (h', w'), padding top/bottom, left/right
#   (9, 32) -> (32, 32): 1.0, (9, 32), 11/12, 0/0
#   (5, 7) -> (32, 32): 32/7, (23, 32), 4/5, 0/0
#   (30, 7) -> (16, 24): 16/30, (16, 4), 0/0, 10/10         (even, for contrast)
#   (12, 5) -> (16, 24): 16/12, (16, 7), 0/0, 8/9
@pytest.mark.parametrize(
    "frame, model, rows, cols",
    [((9, 32), (32, 32), (11, 20), (0, 32)), ((5, 7), (32, 32), (4, 27), (0, 32)),
     ((30, 7), (16, 24), (0, 16), (10, 14)), ((12, 5), (16, 24), (0, 16), (8, 15))],
    ids=["9x32-in-32x32", "5x7-in-32x32", "30x7-in-16x24", "12x5-in-16x24"],
)
def test_letterbox_odd_padding_by_hand(frame, model, rows, cols):
    spec = InputSpec(height=model[0], width=model[1], resize_mode="letterbox", mean=(0.5,) * 3, std=(0.5,) * 3)
    rgb = (200, 100, 50)
    image = np.empty((*frame, 3), np.uint8)
    image[:] = rgb
    got = prepare_batch([image], spec, color_order="RGB", limits=ImageLimits(min_side=1)).batch[0]
    expected = np.zeros((*model, 3), np.uint8)
    expected[rows[0] : rows[1], cols[0] : cols[1]] = rgb
    np.testing.assert_array_equal(got, expected)

"""Detector end to end through the real onnxruntime, on the red-channel model (conftest)."""

import threading
import time

import cv2
import numpy as np
import pytest

from ffrt import Detector, ImageSize, InvalidArgumentError, InvalidImageError, Result
from ffrt.errors import ImageFileError

from conftest import SIZE, solid_bgr

RED_BGR, BLUE_BGR = (0, 0, 255), (255, 0, 0)


@pytest.fixture(scope="module")
def det(red_model):
    return Detector(red_model, backend="onnxruntime-cpu", threads=1)


def test_properties(det, red_model):
    assert det.backend_name == "onnxruntime-cpu"
    assert "CPUExecutionProvider" in det.backend_description
    assert det.input_size == ImageSize(SIZE, SIZE) and det.input_size.height == SIZE
    assert det.meta.input.height == SIZE
    assert (det.thresholds.image, det.thresholds.pixel) == (0.5, 0.5)
    assert det.model_path == red_model
    assert det.color_order == "BGR"


def test_auto_picks_cpu_here_and_says_why(red_model, caplog):
    from ffrt.backends import availability
    from ffrt.backends.base import CPU_BACKENDS

    av = availability()
    with caplog.at_level("INFO", logger="ffrt"):
        d = Detector(red_model)
    if av["onnxruntime-cuda"] is not None:  # a CPU host: every GPU backend skipped, and why
        # ONNX Runtime or OpenVINO, whichever was measured faster here (backend_choice says)
        assert d.backend_name in CPU_BACKENDS and d.backend_choice
        assert any(s.startswith("onnxruntime-cuda: ") and "ffrt[gpu]" in s for s in d.backend_selection)
        assert f"chose {d.backend_name}" in caplog.text and "skipped onnxruntime-cuda" in caplog.text
    else:  # a GPU host (issue 11 item 9): auto must take a GPU backend and say so
        assert d.backend_name != "onnxruntime-cpu" and f"chose {d.backend_name}" in caplog.text


def test_colour_order_bgr_default(det):
    red, blue = det(solid_bgr(40, 50, RED_BGR)), det(solid_bgr(40, 50, BLUE_BGR))
    assert isinstance(red, Result)
    assert red.score == pytest.approx(1.0) and red.is_anomalous and red.mask.all()
    assert blue.score == pytest.approx(0.0) and not blue.is_anomalous and not blue.mask.any()


def test_colour_order_rgb(red_model):
    d = Detector(red_model, color_order="RGB")
    assert d(solid_bgr(40, 50, RED_BGR)).score == pytest.approx(0.0)  # (0,0,255) is blue in RGB
    assert d(solid_bgr(40, 50, BLUE_BGR)).score == pytest.approx(1.0)


def test_grayscale_feeds_all_channels(det):
    r = det(np.full((20, 30), 204, np.uint8))
    assert r.score == pytest.approx(204 / 255, abs=1e-6)
    assert det(np.full((20, 30, 1), 51, np.uint8)).score == pytest.approx(51 / 255, abs=1e-6)


def test_float_input(det):
    assert det(np.full((20, 30, 3), 0.6, np.float32)).score == pytest.approx(153 / 255, abs=1e-6)


def test_map_is_resized_back_and_mask_is_where_the_defect_is(det):
    h, w = 100, 60
    img = solid_bgr(h, w, BLUE_BGR)
    img[40:60, 20:40] = RED_BGR  # a "defect": rows 40-59, cols 20-39
    r = det(img)
    assert r.anomaly_map.shape == (h, w) and r.anomaly_map.dtype == np.float32
    assert r.mask.shape == (h, w) and r.mask.dtype == bool
    truth = np.zeros((h, w), bool)
    truth[40:60, 20:40] = True
    iou = (r.mask & truth).sum() / (r.mask | truth).sum()
    assert iou > 0.8, iou
    ys, xs = np.nonzero(r.mask)
    assert abs(ys.min() - 40) <= 3 and abs(ys.max() - 59) <= 3 and abs(xs.min() - 20) <= 3 and abs(xs.max() - 39) <= 3
    # The map is the model-size map, bilinearly resized (the documented behaviour).
    small = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)[:, :, 2].astype(np.float32) / 255
    np.testing.assert_allclose(r.anomaly_map, cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), atol=1e-6)
    assert np.array_equal(r.mask, r.anomaly_map > 0.5)


def test_resize_outputs_false_gives_model_size(red_model):
    d = Detector(red_model, resize_outputs=False)
    r = d(solid_bgr(100, 60, RED_BGR))
    assert r.anomaly_map.shape == (SIZE, SIZE) and r.mask.shape == (SIZE, SIZE)


def test_thresholds_constructor_and_set_thresholds(red_model):
    img = solid_bgr(10, 10, (0, 0, 153))  # score 0.6
    d = Detector(red_model, image_threshold=0.7, pixel_threshold=0.7)
    assert d.thresholds.image == 0.7
    r = d(img)
    assert not r.is_anomalous and not r.mask.any()
    new = d.set_thresholds(image=0.55)
    assert (new.image, new.pixel) == (0.55, 0.7) and d.thresholds == new
    r = d(img)
    assert r.is_anomalous and not r.mask.any()
    d.set_thresholds(pixel=0.59)
    assert d(img).mask.all()
    assert d.meta.thresholds.image == 0.5  # the file's metadata is untouched
    for bad in (float("nan"), float("inf"), "high", True):
        with pytest.raises(InvalidArgumentError):
            d.set_thresholds(image=bad)
    assert d.thresholds.image == 0.55  # a refused value changes nothing


def test_predict_batch_splits_by_batch_max(models, monkeypatch):
    d = Detector(models["red_b3"])
    seen = []
    real_run = d._backend.run

    def spy(batch):  # records what reaches the real ORT session, then runs it
        seen.append(batch.shape[0])
        return real_run(batch)

    monkeypatch.setattr(d._backend, "run", spy)
    images = [solid_bgr(20 + i, 30, (0, 0, 30 * i)) for i in range(7)]
    results = d.predict_batch(images)
    assert seen == [3, 3, 1]
    assert [r.score for r in results] == pytest.approx([30 * i / 255 for i in range(7)], abs=1e-6)
    assert [r.anomaly_map.shape for r in results] == [(20 + i, 30) for i in range(7)]
    assert len({r.latency_ms for r in results}) == 1  # one call, one latency
    seen.clear()
    d.predict_batch(images, batch_size=2)
    assert seen == [2, 2, 2, 1]
    with pytest.raises(InvalidArgumentError, match="batch_max 3"):
        d.predict_batch(images, batch_size=5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgumentError):
            d.predict_batch(images, batch_size=bad)


def test_predict_batch_accepts_arrays_and_iterables(det):
    stack = np.stack([solid_bgr(SIZE, SIZE, RED_BGR), solid_bgr(SIZE, SIZE, BLUE_BGR)])
    assert [r.is_anomalous for r in det.predict_batch(stack)] == [True, False]
    assert [r.is_anomalous for r in det.predict_batch(iter(stack))] == [True, False]
    assert det.predict_batch([]) == []
    with pytest.raises(InvalidImageError, match="det\\(image\\)"):
        det.predict_batch(stack[0])
    with pytest.raises(InvalidImageError, match="det\\(path\\)"):
        det.predict_batch("image.png")


def test_single_call_rejects_batches(det):
    with pytest.raises(InvalidImageError, match="predict_batch"):
        det([solid_bgr(8, 8, RED_BGR)])
    with pytest.raises(InvalidImageError, match="predict_batch"):
        det(np.zeros((2, 8, 8, 3), np.uint8))


def test_paths(det, tmp_path):
    p = tmp_path / "teil.png"
    p.write_bytes(cv2.imencode(".png", solid_bgr(30, 40, RED_BGR))[1].tobytes())
    r = det(p)
    assert r.score == pytest.approx(1.0) and r.anomaly_map.shape == (30, 40)
    assert det(str(p)).score == pytest.approx(1.0)


BAD = [
    (None, InvalidImageError, "None"),
    ("no/such/file.png", ImageFileError, "no such image file"),
    (np.zeros((0, 5, 3), np.uint8), InvalidImageError, "empty"),
    (np.zeros((5, 5, 4), np.uint8), InvalidImageError, "cv2.cvtColor"),
    (np.zeros((5, 5), np.uint16), InvalidImageError, ">> 8"),
    (np.full((5, 5), np.nan, np.float32), InvalidImageError, "NaN"),
    (np.full((5, 5), 2.0, np.float64), InvalidImageError, "[0, 1]"),
    ("corrupt", ImageFileError, "cannot be decoded"),
    ("empty", ImageFileError, "empty"),
]


@pytest.mark.parametrize("image,error,fragment", BAD, ids=[f"{i}-{f}" for i, (_, _, f) in enumerate(BAD)])
def test_bad_input_raises_before_the_backend_and_leaves_no_state(red_model, tmp_path, monkeypatch, image, error, fragment):
    d = Detector(red_model)
    if isinstance(image, str) and image == "corrupt":
        image = tmp_path / "c.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif isinstance(image, str) and image == "empty":
        image = tmp_path / "e.png"
        image.write_bytes(b"")
    calls = []
    real_run = d._backend.run
    monkeypatch.setattr(d._backend, "run", lambda b: calls.append(b) or real_run(b))
    with pytest.raises(error) as exc:
        d(image)
    assert fragment in str(exc.value)
    with pytest.raises(error):
        d.predict_batch([solid_bgr(8, 8, RED_BGR), image])
    assert calls == [] and d.stats.count == 0  # the backend was never touched, nothing timed
    r = d(solid_bgr(8, 8, RED_BGR))  # and the next valid call works
    assert r.score == pytest.approx(1.0) and d.stats.count == 1 and len(calls) == 1


def test_nan_scores_fail_the_part(models, caplog):
    d = Detector(models["nan"])
    with caplog.at_level("WARNING", logger="ffrt"):
        r = d(solid_bgr(10, 10, BLUE_BGR))
    assert np.isnan(r.score) and r.is_anomalous and r.mask.all()
    assert "NaN" in caplog.text


def test_stats_are_recorded_per_call(red_model):
    d = Detector(red_model)
    d.warmup(n=2)
    assert d.stats.count == 0  # warm-up is not timed
    results = [d(solid_bgr(10, 10, RED_BGR)) for _ in range(4)] + d.predict_batch([solid_bgr(10, 10, RED_BGR)] * 3)
    s = d.stats
    assert (s.count, s.images) == (5, 7)
    assert 0 < s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    latencies = [r.latency_ms for r in results[:4]] + [results[4].latency_ms]
    assert s.max_ms == pytest.approx(max(latencies))
    # One caller: calls never overlap, so the busy throughput is images / sum of latencies,
    # and the wall-clock one (gaps between calls included) cannot be higher.
    assert s.busy_fps == pytest.approx(7 / (sum(latencies) / 1000), rel=1e-6)
    assert 0 < s.fps <= s.busy_fps
    assert "p99" in str(s) and "images/s" in str(s)
    d.reset_stats()
    assert d.stats.count == 0


def test_concurrent_calls_are_safe(red_model):
    d = Detector(red_model, threads=1)
    errors, scores = [], []

    def work(value):
        try:
            for _ in range(10):
                scores.append((value, d(solid_bgr(12, 12, (0, 0, value))).score))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(v,)) for v in (0, 102, 255)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(s == pytest.approx(v / 255, abs=1e-6) for v, s in scores)
    assert d.stats.count == 30


def test_stats_report_wall_clock_throughput_with_threads(red_model):
    # Issue 10: with 8 threads, stats reported a fraction of the real throughput (images /
    # sum of the overlapping latencies). Large frames make every call spend most of its time in
    # OpenCV resizes, which release the GIL, so the threads' calls really overlap.
    d = Detector(red_model, threads=1)
    frame = solid_bgr(1500, 2000, RED_BGR)
    d(frame)
    d.reset_stats()
    latencies: list[float] = []

    def work():
        for _ in range(6):
            latencies.append(d(frame).latency_ms / 1000)

    threads = [threading.Thread(target=work) for _ in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    s = d.stats
    assert s.images == 24
    # The window lies inside the measured span, so its wall-clock rate is at least this.
    assert s.wall_s <= elapsed and s.fps >= 24 / elapsed
    # ... and calls overlapped, which images / sum of latencies cannot see.
    assert sum(latencies) > elapsed
    assert s.fps > 24 / sum(latencies)


def test_result_repr_is_short(det):
    text = repr(det(solid_bgr(100, 60, RED_BGR)))
    assert "float32[100x60]" in text and len(text) < 200

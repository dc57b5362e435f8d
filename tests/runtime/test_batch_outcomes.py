"""predict_batch with per-image outcomes (issue 10, item 5), on the red-channel model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import solid_bgr
from ffrt import Detector, FFRTError, ImageFileError, InvalidArgumentError, InvalidImageError, Result

RED_BGR, BLUE_BGR = (0, 0, 255), (255, 0, 0)


@pytest.fixture(scope="module")
def det(red_model):
    return Detector(red_model, threads=1)


def test_one_bad_frame_does_not_cost_the_others(det, tmp_path):
    missing = tmp_path / "gone.png"
    good_file = tmp_path / "red.png"
    good_file.write_bytes(cv2.imencode(".png", solid_bgr(30, 40, RED_BGR))[1].tobytes())
    images = [solid_bgr(20, 30, RED_BGR), None, solid_bgr(20, 30, BLUE_BGR), missing, np.zeros((2, 2), np.uint8), good_file]
    det.reset_stats()
    out = det.predict_batch(images, errors="return")
    assert len(out) == 6
    assert [type(o) for o in out] == [Result, InvalidImageError, Result, ImageFileError, InvalidImageError, Result]
    assert [out[i].score for i in (0, 2, 5)] == pytest.approx([1.0, 0.0, 1.0], abs=1e-6)
    assert out[5].anomaly_map.shape == (30, 40)
    assert "image 1 of 6" in str(out[1]) and "None" in str(out[1])
    assert "image 3 of 6" in str(out[3]) and "no such image file" in str(out[3])
    assert "image 4 of 6" in str(out[4]) and "min_side" in str(out[4])
    s = det.stats
    assert (s.count, s.images) == (1, 3)  # one call, three images scored


def test_errors_raise_is_the_default_and_names_the_image(det):
    with pytest.raises(InvalidImageError, match="image 1 of 3"):
        det.predict_batch([solid_bgr(20, 30, RED_BGR), None, solid_bgr(20, 30, RED_BGR)])
    with pytest.raises(InvalidImageError, match="image 1 of 3"):
        det.predict_batch([solid_bgr(20, 30, RED_BGR), None, solid_bgr(20, 30, RED_BGR)], errors="raise")


def test_all_refused(det):
    det.reset_stats()
    out = det.predict_batch([None, None], errors="return")
    assert all(isinstance(o, InvalidImageError) for o in out)
    assert det.stats.count == 0  # nothing ran, nothing timed


def test_chunks_with_refused_images(models):
    d = Detector(models["red_b3"])
    images = [solid_bgr(20, 30, (0, 0, 30 * i)) if i % 3 else None for i in range(8)]
    out = d.predict_batch(images, errors="return")
    for i, o in enumerate(out):
        if i % 3:
            assert o.score == pytest.approx(30 * i / 255, abs=1e-6)
        else:
            assert isinstance(o, InvalidImageError)


def test_none_and_non_iterables_are_ffrt_errors(det):
    # Issue 10: predict_batch(None) raised a plain TypeError.
    with pytest.raises(InvalidImageError, match="None instead of a list"):
        det.predict_batch(None)
    with pytest.raises(FFRTError, match="not an object of type int"):
        det.predict_batch(5)
    with pytest.raises(InvalidArgumentError, match="errors must be"):
        det.predict_batch([solid_bgr(20, 30, RED_BGR)], errors="ignore")

"""render_overlay: a BGR picture of the right size with the mask outlined where it is."""

import numpy as np
import pytest

from ffrt.errors import InvalidImageError
from ffrt.overlay import OUTLINE_BGR, render_overlay


def _inputs(h=80, w=120):
    image = np.full((h, w), 100, np.uint8)
    amap = np.zeros((h, w), np.float32)
    amap[20:40, 30:60] = 1.0
    return image, amap, amap > 0.5


def test_shape_outline_and_heat():
    image, amap, mask = _inputs()
    out = render_overlay(image, amap, mask)
    assert out.shape == (80, 120, 3) and out.dtype == np.uint8
    assert tuple(out[20, 45]) == OUTLINE_BGR  # top edge of the mask
    assert tuple(out[10, 10]) != OUTLINE_BGR
    # JET: cold (blue-dominant) far from the defect, hot (red-dominant) inside it.
    assert out[70, 100, 0] > out[70, 100, 2]
    assert out[30, 45, 2] > out[30, 45, 0]


def test_map_and_mask_at_model_size_are_resized():
    image, amap, mask = _inputs()
    small_map = amap[::4, ::4].copy()
    out = render_overlay(np.dstack([image] * 3), small_map, small_map > 0.5, vmin=0, vmax=1)
    assert out.shape == (80, 120, 3)
    assert (out == np.array(OUTLINE_BGR, np.uint8)).all(axis=2).any()


def test_score_text_changes_pixels():
    image, amap, mask = _inputs()
    plain = render_overlay(image, amap, mask)
    labelled = render_overlay(image, amap, mask, score=1.23, is_anomalous=True)
    assert not np.array_equal(plain[:15, :60], labelled[:15, :60])
    assert np.array_equal(plain[60:], labelled[60:])


def test_constant_and_nan_maps_do_not_crash():
    image, amap, mask = _inputs()
    render_overlay(image, np.zeros_like(amap), np.zeros_like(mask))
    render_overlay(image, np.full_like(amap, np.nan), mask)


@pytest.mark.parametrize(
    "image,amap",
    [
        (np.zeros((8, 8), np.float32), np.zeros((8, 8), np.float32)),
        (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.float32)),
        (np.zeros((8, 8), np.uint8), np.zeros(8, np.float32)),
    ],
)
def test_bad_inputs(image, amap):
    with pytest.raises(InvalidImageError):
        render_overlay(image, amap, np.zeros((8, 8), bool))

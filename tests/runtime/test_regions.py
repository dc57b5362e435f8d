"""Defect regions (ffrt.regions) on drawn masks whose components are known by hand."""

import json

import numpy as np
import pytest

from ffrt import InvalidArgumentError
from ffrt.regions import Region, find_regions


def _canvas(h=20, w=30):
    return np.zeros((h, w), bool), np.zeros((h, w), np.float32)


def test_components_areas_boxes_centroids_peaks_largest_first():
    mask, amap = _canvas()
    mask[2:6, 3:8] = True  # 4 rows x 5 cols = 20 px
    amap[2:6, 3:8] = 0.6
    amap[4, 6] = 0.9
    for i in range(4):  # a diagonal: one region with 8-connectivity, four with 4
        mask[10 + i, 10 + i] = True
        amap[10 + i, 10 + i] = 0.5 + 0.05 * i
    mask[18, 28] = True  # a single pixel
    amap[18, 28] = 0.55
    regions = find_regions(mask, amap)
    assert regions == (
        Region(area_px=20, bbox=(3, 2, 5, 4), centroid=(5.0, 3.5), peak_score=pytest.approx(0.9)),
        Region(area_px=4, bbox=(10, 10, 4, 4), centroid=(11.5, 11.5), peak_score=pytest.approx(0.65)),
        Region(area_px=1, bbox=(28, 18, 1, 1), centroid=(28.0, 18.0), peak_score=pytest.approx(0.55)),
    )


def test_min_region_px_drops_small_regions_only():
    mask, amap = _canvas()
    mask[2:6, 3:8] = True
    for i in range(4):
        mask[10 + i, 10 + i] = True
    mask[18, 28] = True
    assert [r.area_px for r in find_regions(mask, amap, min_region_px=4)] == [20, 4]
    assert [r.area_px for r in find_regions(mask, amap, min_region_px=5)] == [20]
    assert find_regions(mask, amap, min_region_px=21) == ()


def test_equal_areas_ordered_by_first_pixel_in_raster_order():
    mask, amap = _canvas()
    mask[10:12, 1:3] = True  # 4 px, top row 10
    mask[3:5, 20:22] = True  # 4 px, top row 3: comes first
    mask[3:5, 12:14] = True  # 4 px, top row 3 but further left: first of all
    boxes = [r.bbox for r in find_regions(mask, amap)]
    assert boxes == [(12, 3, 2, 2), (20, 3, 2, 2), (1, 10, 2, 2)]
    # The same mask transposed and back gives the same answer: the order is the mask's, not the labeller's.
    assert [r.bbox for r in find_regions(np.ascontiguousarray(mask.T).T, amap)] == boxes


def test_empty_mask_has_no_regions():
    mask, amap = _canvas()
    amap[:] = 0.9  # a high map does not make regions: only the mask does
    assert find_regions(mask, amap) == ()


def test_nan_peak_and_json():
    mask, amap = _canvas()
    mask[0:2, 0:2] = True
    amap[0, 1] = np.nan
    (r,) = find_regions(mask, amap)
    assert np.isnan(r.peak_score)
    d = r.to_dict()
    assert d == {"area_px": 4, "bbox": [0, 0, 2, 2], "centroid": [0.5, 0.5], "peak_score": None}
    json.dumps(d, allow_nan=False)


def test_model_size_mask_is_scaled_to_the_frame():
    # A 4x4 model-size mask, a 8-high x 12-wide frame: one model pixel = 2 rows x 3 columns.
    mask, amap = np.zeros((4, 4), bool), np.zeros((4, 4), np.float32)
    mask[1, 2] = True
    amap[1, 2] = 0.7
    (r,) = find_regions(mask, amap, frame_size=(8, 12))
    # Frame pixels rows 2-3, columns 6-8: 6 px, centred on (7, 2.5).
    assert r == Region(area_px=6, bbox=(6, 2, 3, 2), centroid=(7.0, 2.5), peak_score=pytest.approx(0.7))
    # min_region_px counts frame pixels.
    assert find_regions(mask, amap, frame_size=(8, 12), min_region_px=7) == ()


def test_letterbox_padding_is_cut_off_before_scaling():
    # A 16-wide x 8-high frame letterboxed into an 8x8 model: it fills rows 2-5, scale 1/2.
    mask, amap = np.zeros((8, 8), bool), np.zeros((8, 8), np.float32)
    mask[0, :] = True  # in the padding: not part of the frame, no region
    mask[3, 5] = True  # frame row 1 -> frame rows 2-3, frame column 5 -> columns 10-11
    (r,) = find_regions(mask, amap, frame_size=(8, 16), content=(2, 0, 4, 8))
    assert r == Region(area_px=4, bbox=(10, 2, 2, 2), centroid=(10.5, 2.5), peak_score=0.0)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_min_region_px_must_be_a_count(bad):
    mask, amap = _canvas()
    with pytest.raises(InvalidArgumentError, match="min_region_px"):
        find_regions(mask, amap, min_region_px=bad)

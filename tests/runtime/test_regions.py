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


# --- through the Detector, on the red-channel model (map = red / 255; tests/runtime/conftest.py) ---
# Rectangles aligned to the resize grid (whole model pixels) make the model-size map exactly
# 1 inside and 0 outside. Upsampled bilinearly by 2 (rows) and 3 (columns), the frame-size
# map is 0.75 / 0.25 on the pixels inside / outside a horizontal edge, 2/3 / 1/3 at a
# vertical edge and 0.75 * 2/3 = 0.5 at a corner: with a pixel threshold of 0.4 the mask is
# exactly the rectangle, and both output modes must report the same frame-pixel regions.

RED = (0, 0, 255)


def _two_rectangles():
    """64 x 96 frame (model 32 x 32: 2 rows x 3 columns per model pixel)."""
    frame = np.zeros((64, 96, 3), np.uint8)
    frame[10:30, 21:51] = RED  # model rows 5-14, columns 7-16: 600 frame px
    frame[40:44, 69:75] = RED  # model rows 20-21, columns 23-24: 24 frame px
    return frame


EXPECTED = (
    Region(area_px=600, bbox=(21, 10, 30, 20), centroid=(35.5, 19.5), peak_score=pytest.approx(1.0)),
    Region(area_px=24, bbox=(69, 40, 6, 4), centroid=(71.5, 41.5), peak_score=pytest.approx(1.0)),
)


@pytest.mark.parametrize("resize_outputs", [True, False])
def test_detector_regions_in_frame_coordinates(red_model, resize_outputs):
    from ffrt import Detector

    det = Detector(red_model, backend="onnxruntime-cpu", threads=1, resize_outputs=resize_outputs, pixel_threshold=0.4)
    r = det(_two_rectangles())
    assert r.mask.shape == ((64, 96) if resize_outputs else (32, 32))
    assert r.regions == EXPECTED
    # Same through predict_batch, next to an image with no defect.
    clean, dirty = det.predict_batch([np.zeros((64, 96, 3), np.uint8), _two_rectangles()])
    assert clean.regions == () and dirty.regions == EXPECTED


def test_min_region_px_filters_regions_not_the_verdict(red_model):
    from ffrt import Detector

    det = Detector(red_model, backend="onnxruntime-cpu", threads=1, pixel_threshold=0.4, min_region_px=25)
    r = det(_two_rectangles())
    assert r.regions == EXPECTED[:1]
    big = Detector(red_model, backend="onnxruntime-cpu", threads=1, pixel_threshold=0.4, min_region_px=601)(
        _two_rectangles()
    )
    # Every region is below the minimum, the score is still above the threshold: rejected.
    assert big.regions == () and big.is_anomalous and big.score == pytest.approx(1.0)
    with pytest.raises(InvalidArgumentError, match="min_region_px"):
        Detector(red_model, min_region_px=-1)


@pytest.mark.parametrize("resize_outputs", [True, False])
def test_letterboxed_model_regions_skip_the_padding(models, tmp_path, resize_outputs):
    from conftest import make_graph, make_meta, save_model

    from ffrt import Detector

    meta = make_meta()
    meta = meta.model_copy(update={"input": meta.input.model_copy(update={"resize_mode": "letterbox"})})
    path = save_model(tmp_path / "letterbox.onnx", make_graph(), meta)
    # A 32 x 64 frame in the 32 x 32 model: scale 1/2, rows 8-23 of the model input.
    frame = np.zeros((32, 64, 3), np.uint8)
    frame[4:12, 10:30] = RED  # model rows 10-13, columns 5-14
    r = Detector(path, backend="onnxruntime-cpu", threads=1, resize_outputs=resize_outputs)(frame)
    assert r.regions == (Region(area_px=160, bbox=(10, 4, 20, 8), centroid=(19.5, 7.5), peak_score=pytest.approx(1.0)),)


def test_result_to_dict_is_json_without_arrays(red_model):
    from ffrt import Detector

    r = Detector(red_model, backend="onnxruntime-cpu", threads=1, pixel_threshold=0.4)(_two_rectangles())
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert "anomaly_map" not in text and "mask" not in text
    assert d["score"] == pytest.approx(1.0) and d["is_anomalous"] is True
    assert d["normalized_score"] is None  # the red model's metadata has no score_stats
    assert d["regions"] == [
        {"area_px": 600, "bbox": [21, 10, 30, 20], "centroid": [35.5, 19.5], "peak_score": pytest.approx(1.0)},
        {"area_px": 24, "bbox": [69, 40, 6, 4], "centroid": [71.5, 41.5], "peak_score": pytest.approx(1.0)},
    ]
    assert (d["backend"], d["precision"]) == ("onnxruntime-cpu", "fp32")
    assert d["queue_ms"] == 0.0  # a direct call never waits in the submit queue
    parts = d["queue_ms"] + d["preprocess_ms"] + d["inference_ms"] + d["postprocess_ms"]
    assert parts == pytest.approx(d["latency_ms"], abs=1e-3) and d["inference_ms"] > 0

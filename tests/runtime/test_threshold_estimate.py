"""The thresholds' false-reject estimate in the metadata (schema 7): stored, shown, checked,
and dropped when a threshold is overridden (it no longer describes the value in use)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_graph, make_meta, save_model
from ffcore.operating_point import operating_point
from ffrt import Detector, ModelFileError
from ffrt.cli import main
from ffrt.meta import ModelMeta, ThresholdEstimate

# What fftrain stores for 26 validation normals at a 2% target (issue 21's set B).
POINT = operating_point(np.random.default_rng(0).gamma(2.0, 1.0, 26), 0.02)


def _meta_with_estimate() -> ModelMeta:
    meta = make_meta()
    estimate = ThresholdEstimate.of(POINT.to_dict())
    return meta.with_thresholds(POINT.threshold, 0.5, "validation normals (n=26), target false-reject rate 0.02",
                                image_estimate=estimate)


def test_estimate_round_trips_through_the_model_file_and_info_shows_it(tmp_path, capsys):
    meta = _meta_with_estimate()
    path = save_model(tmp_path / "m.onnx", make_graph(), meta_json=meta.to_json())
    with Detector(path, backend="onnxruntime-cpu") as det:
        stored = det.meta.thresholds.image_estimate
    assert stored.point(det.meta.thresholds.image) == POINT
    assert det.meta.thresholds.pixel_estimate is None
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"  image: {POINT.summary()}" in out and "474 more good parts" in out and "  pixel:" not in out


def test_an_overridden_threshold_drops_its_estimate(tmp_path):
    path = save_model(tmp_path / "m.onnx", make_graph(), meta_json=_meta_with_estimate().to_json())
    with Detector(path, backend="onnxruntime-cpu", image_threshold=POINT.threshold * 2) as det:
        assert det.thresholds.image_estimate is None and det.thresholds.image == POINT.threshold * 2


@pytest.mark.parametrize("field, value, message", [
    ("method", "guess", "Input should be 'order_statistic', 'tail_model' or 'largest_score'"),
    ("frr_high", 1.5, "Input should be less than or equal to 1"),
    ("target_frr", 0.0, "Input should be greater than 0"),
    ("needed_more", 0, "Input should be greater than 0"),
    ("n", 0, "Input should be greater than 0"),
])
def test_a_bad_estimate_is_refused_with_its_field_named(tmp_path, field, value, message):
    data = json.loads(_meta_with_estimate().to_json())
    data["thresholds"]["image_estimate"][field] = value
    path = save_model(tmp_path / "bad.onnx", make_graph(), meta_json=json.dumps(data))
    with pytest.raises(ModelFileError, match=f"thresholds.image_estimate.{field}: {message}"):
        Detector(path, backend="onnxruntime-cpu")

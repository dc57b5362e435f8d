"""The pieces of the Triton path that need no server: the wire format of a Result, the error
tags, Detector.run_model (what ``ffrt serve`` binds as ffrt_model) and the byte decoder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ffrt import Detector, ImageFileError, InvalidImageError
from ffrt.preprocess import ImageLimits, decode_image_bytes
from ffrt.triton import protocol


@pytest.fixture(scope="module")
def det(tiny_onnx):
    with Detector(tiny_onnx, color_order="RGB") as d:
        yield d


def test_result_travels_unchanged(det, real_images, tiny_onnx):
    frame = cv2.resize(real_images[0], (90, 70))
    # A pixel threshold at the map's median: about half the pixels in the mask, so regions exist.
    cut = max(0.0, float(np.median(det(frame).anomaly_map)))
    with Detector(tiny_onnx, color_order="RGB", pixel_threshold=cut) as low:
        r = low(frame)
    tensors = protocol.result_tensors(r)
    # Each tensor as the config declares it, with the batch dimension of 1 in front.
    for name, (_, _, dtype, dims) in protocol.OUTPUTS.items():
        t = tensors[name]
        assert t.dtype == dtype and t.shape[0] == 1 and t.ndim == len(dims) + 1, name
        assert all(d == -1 or d == s for d, s in zip(dims, t.shape[1:])), name
    back = protocol.result_from_tensors(tensors.get, latency_ms=1.5)
    assert back.score == r.score and back.is_anomalous == r.is_anomalous
    assert back.normalized_score == r.normalized_score and back.latency_ms == 1.5
    assert np.array_equal(back.anomaly_map, r.anomaly_map) and np.array_equal(back.mask, r.mask)
    assert r.regions and back.regions == r.regions  # every field exact through float64
    # A server written before the INFO_OUTPUTS existed sends none of them: the fields stay unset.
    old = {k: v for k, v in tensors.items() if k not in protocol.INFO_OUTPUTS}
    assert set(old) == set(protocol.OUTPUTS)
    back = protocol.result_from_tensors(old.get, latency_ms=1.5)
    assert back.backend is None and back.precision is None and back.latency_split is None
    assert back.score == r.score and back.regions == r.regions


def test_backend_precision_and_split_travel_and_the_split_adds_up_to_the_round_trip(det, real_images):
    r = det(real_images[0])
    s = r.latency_split
    assert r.precision == "fp32" and s is not None
    tensors = protocol.result_tensors(r, backend="ffrt serve ffrt_model: onnxruntime-cpu (CPUExecutionProvider)")
    for name, (_, _, dtype, dims) in protocol.INFO_OUTPUTS.items():
        assert tensors[name].dtype == dtype and tensors[name].shape == (1, *dims), name
    server_ms = s.preprocess_ms + s.inference_ms + s.postprocess_ms
    round_trip = server_ms + 7.25  # the network and the server's queue: what the client adds
    back = protocol.result_from_tensors(tensors.get, latency_ms=round_trip)
    assert back.backend == "ffrt serve ffrt_model: onnxruntime-cpu (CPUExecutionProvider)"
    assert back.precision == "fp32"
    b = back.latency_split
    assert (b.preprocess_ms, b.inference_ms, b.postprocess_ms) == (s.preprocess_ms, s.inference_ms, s.postprocess_ms)
    assert b.queue_ms == pytest.approx(7.25)
    assert b.queue_ms + b.preprocess_ms + b.inference_ms + b.postprocess_ms == pytest.approx(round_trip)
    assert back.to_dict()["backend"] == back.backend and back.to_dict()["precision"] == "fp32"


def test_missing_outputs_are_named(det, real_images):
    tensors = protocol.result_tensors(det(real_images[0]))
    del tensors["mask"]
    with pytest.raises(Exception, match="lacks the output\\(s\\) mask"):
        protocol.result_from_tensors(tensors.get, 0.0)


def test_error_tags_survive_prefixes():
    msg = protocol.error_message(InvalidImageError("image is None."))
    assert msg == "ffrt.InvalidImageError: image is None."
    assert protocol.parse_error(f"[500] in model 'x': {msg}") == ("InvalidImageError", "image is None.")
    assert protocol.parse_error(protocol.error_message(RuntimeError("boom"))) == ("InferenceError", "RuntimeError: boom")
    assert protocol.parse_error("unexpected datatype") is None


def test_run_model_is_the_graph_on_a_model_size_batch(det, real_images):
    maps, scores = det.run_model(real_images[:3])
    for i in range(3):
        r = det(real_images[i])
        assert abs(float(scores[i]) - r.score) <= 1e-5
        assert float(np.max(np.abs(maps[i, 0] - r.anomaly_map))) <= 1e-5
    for bad in (real_images[0], real_images[:2].astype(np.float32), real_images[:2, :32], real_images[:0]):
        with pytest.raises(InvalidImageError, match="run_model takes a uint8 batch"):
            det.run_model(bad)


def test_decode_image_bytes_checks_before_decoding(real_images):
    ok, png = cv2.imencode(".png", real_images[1])
    assert ok
    assert np.array_equal(decode_image_bytes(png.tobytes(), where="x"), real_images[1])
    with pytest.raises(ImageFileError, match="^x: empty"):
        decode_image_bytes(b"", where="x")
    with pytest.raises(ImageFileError, match="cannot be decoded"):
        decode_image_bytes(png.tobytes()[:50], where="x")
    with pytest.raises(ImageFileError, match="max_pixels=1000 .*not decoded"):
        decode_image_bytes(png.tobytes(), ImageLimits(max_pixels=1000), where="x")

"""Non-square models, both resize modes, and the standardized head: the trainer, the
exported graph and the runtime agree on real ELPV cells cropped to a non-square shape."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from ffexport.cli import main as ffexport_main
from ffrt import Detector
from ffrt.metafile import read_onnx_meta
from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.data import Sample, load_batch, read_rgb, resize_to_model
from fftrain.train import TrainSettings, train_and_save

MODEL_HW = (48, 80)


@pytest.fixture(scope="module")
def strips(elpv_split, tmp_path_factory):
    """ELPV cells cut to 300x180 strips (taller than wide: the model is wider than tall, so
    letterboxing really pads), written as real PNG files."""
    folder = tmp_path_factory.mktemp("strips")
    out = []
    for i, s in enumerate(elpv_split.train[:24] + elpv_split.val[:8]):
        strip = cv2.cvtColor(read_rgb(s.path)[:, 60:240], cv2.COLOR_RGB2BGR)
        path = folder / f"{i:03d}.png"
        cv2.imwrite(str(path), strip)
        out.append(Sample(path, 0))
    return out


@pytest.fixture(scope="module", params=["stretch", "letterbox"])
def exported(request, strips, elpv_split, tmp_path_factory):
    from dataclasses import replace

    mode = request.param
    split = replace(elpv_split, train=strips[:24], val=strips[24:], name="strips")
    out = tmp_path_factory.mktemp(f"nonsquare_{mode}")
    config = ModelConfig(image_size=MODEL_HW, resize_mode=mode, flow_steps=1, map_normalization="position",
                         map_blur_sigma=1.5)
    train_and_save(config, split, TrainSettings(epochs=1, batch_size=8, progress=False, augment_views=1),
                   out / "model.pt", log=lambda _: None)
    assert ffexport_main(["--no-bf16", "--ckpt", str(out / "model.pt"), "--out", str(out), "--batch-max", "4",
                          "--parity-images", str(strips[0].path.parent)]) == 0
    return mode, out / "model.pt", out / "model.onnx", strips


def test_graph_and_metadata_are_non_square(exported):
    mode, _, onnx_path, _ = exported
    meta = read_onnx_meta(onnx_path)
    assert (meta.input.height, meta.input.width, meta.input.resize_mode) == (*MODEL_HW, mode)
    assert "standardized" in meta.score.map_units
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape == ["batch", *MODEL_HW, 3]


def test_runtime_feeds_the_trainers_bytes_and_returns_the_frames_geometry(exported):
    mode, ckpt, onnx_path, strips = exported
    model, _ = checkpoint.load(ckpt)
    assert model.config.resize_mode == mode and model.head.normalization == "position"
    frames = [cv2.imread(str(s.path)) for s in strips[:3]]
    assert frames[0].shape[:2] == (300, 180)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    maps, scores = sess.run(None, {"image": load_batch(strips[:3], MODEL_HW, mode)})
    # Pinned to ONNX Runtime: this checks geometry and bytes against the same runtime at 1e-5;
    # "auto" may pick OpenVINO on another CPU, whose FP32 differs by ~1e-5 (its parity test has
    # its own tolerance).
    det = Detector(onnx_path, backend="onnxruntime-cpu")
    results = det.predict_batch(frames)
    np.testing.assert_allclose([r.score for r in results], scores, rtol=1e-5)
    for r, m in zip(results, maps):
        assert r.anomaly_map.shape == (300, 180) and r.mask.shape == (300, 180)
    if mode == "letterbox":
        # The frame fills the middle of the model input; the padding is cut off before the
        # map is resized back, so the map's columns line up with the frame's.
        batch = load_batch(strips[:1], MODEL_HW, mode)[0]
        cols = np.flatnonzero(batch.max(axis=(0, 2)) > 0)
        inner_width = cols[-1] - cols[0] + 1
        assert 20 <= inner_width <= 32 and cols[0] > 20  # 300x180 scaled into 48 rows: ~29 wide, centred
        inner = maps[0, 0][:, cols[0] : cols[-1] + 1]
        expected = cv2.resize(inner, (180, 300), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(results[0].anomaly_map, expected, rtol=1e-5, atol=1e-6)


def test_trainer_and_runtime_letterbox_identically(strips):
    from ffrt.preprocess import prepare_batch

    from ffrt.meta import InputSpec

    for hw in [(48, 80), (64, 64), (80, 48)]:
        spec = InputSpec(height=hw[0], width=hw[1], resize_mode="letterbox", mean=(0.5,) * 3, std=(0.5,) * 3)
        for s in strips[:3]:
            frame = cv2.imread(str(s.path))
            got = prepare_batch([frame], spec).batch[0]
            expected = resize_to_model(read_rgb(s.path), hw, "letterbox")
            np.testing.assert_array_equal(got, expected)


def test_ffeval_scores_pixels_of_non_square_models(exported, tmp_path):
    """Pixel metrics in the model's geometry: masks are stretched or letterboxed like the frames."""
    from ffeval.evaluate import evaluate, model_geometry_mask
    from ffeval.synthetic_data import build_dev_folder

    mode, _, onnx_path, _ = exported
    dev = build_dev_folder("elpv:mono", tmp_path / "dev", crop=(300, 180), seed=2, limit=10)
    report = evaluate(onnx_path, str(dev), out=tmp_path / "eval", batch_size=4, per_group=1)
    assert report["pixel"]["available"] and 0 <= report["pixel"]["auroc"] <= 1
    assert (tmp_path / "eval" / "overlays.png").is_file()  # rows drawn in the model's geometry
    mask_path = next((dev / "ground_truth").rglob("*_mask.png"))
    native = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
    m = model_geometry_mask(mask_path, MODEL_HW, mode)
    assert m.shape == MODEL_HW and m.any()
    if mode == "letterbox":
        # 300x180 into 48x80: the frame occupies columns 25..53; nothing of the mask outside.
        cols = np.flatnonzero(m.any(axis=0))
        assert cols.min() >= 25 and cols.max() <= 54
    else:
        # stretched: the mask's relative position is kept
        ys, xs = np.nonzero(native)
        my, mx = np.nonzero(m)
        assert abs(my.mean() / MODEL_HW[0] - ys.mean() / 300) < 0.1 and abs(mx.mean() / MODEL_HW[1] - xs.mean() / 180) < 0.1


def test_uint8_input_feeds_only_a_cast(exported):
    """Stretch and letterbox exports alike: TensorRT takes a uint8 network input only into a Cast."""
    from support.uint8_input import assert_uint8_only_into_cast

    assert_uint8_only_into_cast(exported[2])

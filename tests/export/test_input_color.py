"""A model trained on grey images reads luminance only, so colour noise is not a defect.

Cameras and codecs add colour to grey parts: MJPEG/H.264 store chroma at a quarter of the
resolution, so a decoded grey frame has unequal channels; a colour camera looking at a grey
part does the same. A model that never saw unequal channels reads them as anomalies. The
trainer records ``input_color="luma"`` for grey training data, and the shipped graph reduces
every frame to BT.601 luminance before the backbone. Checked on real ELPV cells.
"""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch

from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.data import is_monochrome
from fftrain.model import AnomalyModel


def _chroma_noise(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Real grey cells with colour noise of +-8 levels on red and blue, green compensating so
    that the BT.601 luminance moves by less than half a level (integer rounding)."""
    rng = np.random.default_rng(seed)
    red, blue = rng.integers(-8, 9, images.shape[:3]), rng.integers(-8, 9, images.shape[:3])
    out = images.astype(np.int64)
    out[..., 0] += red
    out[..., 2] += blue
    out[..., 1] -= np.rint((0.299 * red + 0.114 * blue) / 0.587).astype(np.int64)
    assert out.min() >= 0 and out.max() <= 255  # no clipping: the luminance bound holds
    return out.astype(np.uint8)


def _torch_scores(model: AnomalyModel, images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return model.eval()(x)[1].numpy()


def test_training_on_grey_cells_records_luma_in_the_checkpoint_and_the_file(tiny_checkpoint, tiny_onnx):
    model, _ = checkpoint.load(tiny_checkpoint)
    assert model.config.input_color == "luma"
    meta = dict((p.key, p.value) for p in onnx.load(str(tiny_onnx), load_external_data=False).metadata_props)
    assert '"color":"luma"' in meta["ffrt.meta"].replace(" ", "")


def test_is_monochrome_on_real_cells(real_images):
    assert is_monochrome(real_images)
    tinted = real_images.copy()
    tinted[3, 10, 10, 2] ^= 1  # one blue value of one pixel of one image
    assert not is_monochrome(tinted)
    assert not is_monochrome(real_images[:0])


def test_luma_model_ignores_colour_noise_an_rgb_model_reads_as_anomaly(tiny_checkpoint, tiny_onnx, real_images):
    from ffrt import Detector

    noisy = _chroma_noise(real_images)
    with Detector(tiny_onnx, backend="onnxruntime-cpu", color_order="RGB") as det:
        grey = np.array([r.score for r in det.predict_batch(list(real_images))])
        coloured = np.array([r.score for r in det.predict_batch(list(noisy))])
    # Bound: what half a level of luminance rounding moves a score (measured up to 4.5%).
    np.testing.assert_allclose(coloured, grey, rtol=0.10)

    # The same weights reading RGB: the colour noise moves scores by tens of percent or more.
    model, _ = checkpoint.load(tiny_checkpoint)
    model.config = model.config.model_copy(update={"input_color": "rgb"})
    rgb_grey, rgb_coloured = _torch_scores(model, real_images), _torch_scores(model, noisy)
    assert np.median(np.abs(rgb_coloured - rgb_grey) / rgb_grey) > 0.3


def test_mjpeg_frames_score_as_their_own_luminance(tiny_onnx, real_images, tmp_path):
    """A real MJPEG round trip (OpenCV's writer and reader): the decoded frames' channels differ;
    the file scores each frame as it scores that frame's own grey version."""
    from ffrt import Detector

    video = tmp_path / "cells.avi"
    h, w = real_images.shape[1:3]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    assert writer.isOpened()
    for img in real_images:
        writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    writer.release()
    cap = cv2.VideoCapture(str(video))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    assert len(frames) == len(real_images)
    assert max(int(np.ptp(f.astype(int), axis=2).max()) for f in frames) > 0  # the codec added colour
    greys = [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for f in frames]
    with Detector(tiny_onnx, backend="onnxruntime-cpu") as det:
        framed = np.array([r.score for r in det.predict_batch(frames)])
        grey = np.array([r.score for r in det.predict_batch(greys)])
    np.testing.assert_allclose(framed, grey, rtol=0.10)


def test_luma_graph_matches_pytorch_on_coloured_frames(tiny_checkpoint, tiny_onnx, real_images):
    """Parity on inputs whose channels differ (the grey fixtures cannot tell a graph that drops
    the luminance step): ONNX Runtime against PyTorch, same tolerance as the FP32 parity."""
    import onnxruntime as ort

    noisy = _chroma_noise(real_images, seed=1)
    model, _ = checkpoint.load(tiny_checkpoint)
    expected = _torch_scores(model, noisy)
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    got = sess.run(["score"], {"image": noisy})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_checkpoint_from_before_the_field_reads_rgb(tmp_path, real_images):
    model = AnomalyModel(ModelConfig(image_size=64, flow_steps=1, random_backbone=True, input_color="rgb"))
    path = tmp_path / "old.pt"
    checkpoint.save(path, model, {"image_threshold": 1.0, "pixel_threshold": 1.0}, {})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    del payload["config"]["input_color"]
    torch.save(payload, path)
    loaded, _ = checkpoint.load(path)
    assert loaded.config.input_color == "rgb"
    noisy = _chroma_noise(real_images[:2])
    np.testing.assert_allclose(_torch_scores(loaded, noisy), _torch_scores(model, noisy), rtol=1e-6)


@pytest.mark.parametrize("color, expected", [("luma", "luma: the graph reads"), ("rgb", "rgb: the graph reads")])
def test_ffrt_info_says_what_the_graph_reads(tiny_onnx, color, expected):
    from ffrt.cli import format_meta
    from ffrt.metafile import read_onnx_meta

    meta = read_onnx_meta(tiny_onnx)
    meta = meta.model_copy(update={"input": meta.input.model_copy(update={"color": color})})
    assert expected in format_meta(meta, tiny_onnx)


def test_the_file_records_the_training_augmentation(tiny_onnx):
    from ffrt.cli import format_meta
    from ffrt.meta import AugmentationInfo
    from ffrt.metafile import read_onnx_meta

    meta = read_onnx_meta(tiny_onnx)
    assert meta.augmentation == AugmentationInfo(views=4, jpeg_share=0.0)  # fftrain's defaults
    assert "augmentation: 4 re-exposed views per training image, no codec artefacts" in format_meta(meta, tiny_onnx)
    coded = meta.model_copy(update={"augmentation": AugmentationInfo(views=4, jpeg_share=0.5)})
    assert "50% of them through JPEG" in format_meta(coded, tiny_onnx)
    older = meta.model_copy(update={"augmentation": None})
    assert "augmentation: not recorded" in format_meta(older, tiny_onnx)


def test_the_input_stage_is_one_float_convolution_that_int8_leaves_alone(tiny_onnx):
    """Luminance and normalization are one 1x1 convolution (3 -> 3 channels) in the file; INT8
    quantization never takes it (it is not the backbone)."""
    from ffcalib.graph import find_quantizable_nodes, input_stage_convs
    from onnx import numpy_helper

    from ffrt.metafile import read_onnx_meta

    model = onnx.load(str(tiny_onnx))
    stage = input_stage_convs(model)
    assert len(stage) == 1
    node = next(n for n in model.graph.node if n.name in stage)
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    meta = read_onnx_meta(tiny_onnx)
    std, mean = np.array(meta.input.std), np.array(meta.input.mean)
    expected = np.array([0.299, 0.587, 0.114])[None, :] / std[:, None]  # BT.601 luma over each channel's std
    np.testing.assert_allclose(init[node.input[1]].reshape(3, 3), expected, rtol=1e-6)
    np.testing.assert_allclose(init[node.input[2]], -mean / std, rtol=1e-6)
    for scope in ("backbone", "all"):
        assert not stage & set(find_quantizable_nodes(model, ("Conv",), scope))

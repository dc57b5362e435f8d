"""``ModelConfig.feature_pooling``: each scale's features pass through a k x k local mean
(stride 1, the border averaging only the cells that exist) before its LayerNorm and decoder,
in training, in the PyTorch model and in the exported graph.

Expected values are computed here by explicit loops over each cell's neighbourhood, never by
the model's own pooling. Stated tolerances: the pooled cells equal the loop's mean within
float32 rounding of a 9-term sum (abs 1e-6); PyTorch vs ONNX Runtime within the export's parity
tolerance (ffexport.parity.FP32_RTOL).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError
from support.torch_vs_detector import torch_and_detector

from ffexport.parity import FP32_RTOL
from ffrt import Detector
from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.data import to_tensor_batch
from fftrain.model import AnomalyModel
from fftrain.train import TrainSettings, train_and_save

SIZE = 64  # tests/conftest.py TINY_SIZE


def _neighbourhood_mean(x: np.ndarray, k: int) -> np.ndarray:
    """[N, C, H, W] -> the mean of each cell's k x k neighbourhood, cells outside the map left out."""
    n, c, h, w = x.shape
    r = k // 2
    out = np.empty_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            window = x[:, :, max(0, i - r): i + r + 1, max(0, j - r): j + r + 1]
            out[:, :, i, j] = window.reshape(n, c, -1).mean(axis=2)
    return out


@pytest.mark.parametrize("k", [3, 5])
def test_pool_is_the_mean_of_each_cells_neighbourhood(k):
    model = AnomalyModel(ModelConfig(image_size=SIZE, random_backbone=True, flow_steps=1, feature_pooling=k))
    x = torch.randn(2, 4, 7, 9, generator=torch.Generator().manual_seed(k))
    pooled = model.pool(x).numpy()
    expected = _neighbourhood_mean(x.numpy().astype(np.float64), k)
    np.testing.assert_allclose(pooled, expected, rtol=0, atol=1e-6)
    # The border is the mean of the cells that exist, not diluted by zero padding.
    assert abs(pooled[0, 0, 0, 0] - x[0, 0, : k // 2 + 1, : k // 2 + 1].mean().item()) < 1e-6


def test_no_pooling_by_default_and_one_means_none():
    assert ModelConfig().feature_pooling == 1
    model = AnomalyModel(ModelConfig(image_size=SIZE, random_backbone=True, flow_steps=1))
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(model.pool(x), x)


def test_the_decoders_read_the_pooled_features():
    """normalize() = LayerNorm(pool(features)) at every scale, so training, the flows and the
    export all see the pooled features."""
    model = AnomalyModel(ModelConfig(image_size=SIZE, random_backbone=True, flow_steps=1, feature_pooling=3)).eval()
    with torch.no_grad():
        features = model.extract(torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
        normalized = model.normalize(features)
    for f, norm, got in zip(features, model.norms, normalized):
        pooled = torch.from_numpy(_neighbourhood_mean(f.numpy().astype(np.float64), 3)).float()
        expected = torch.nn.functional.layer_norm(pooled, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("k", [0, 2, 4, 9])
def test_even_or_out_of_range_windows_are_refused(k):
    with pytest.raises(ValidationError, match="feature.pooling"):
        ModelConfig(feature_pooling=k)


@pytest.fixture(scope="module")
def pooled_model(elpv_split, tmp_path_factory):
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("feature_pooling")
    config = ModelConfig(image_size=SIZE, flow_steps=2, hidden_ratio=1.0, feature_pooling=3)
    train_and_save(config, elpv_split, TrainSettings(epochs=2, batch_size=16, progress=False), out / "model.pt",
                   log=lambda _: None)
    assert main(["--no-bf16", "--ckpt", str(out / "model.pt"), "--out", str(out), "--batch-max", "8"]) == 0
    return out / "model.pt", out / "model.onnx"


def test_checkpoint_metadata_and_info_record_the_pooling(pooled_model, capsys):
    from ffrt.cli import main as ffrt_main
    from ffrt.metafile import read_onnx_meta

    ckpt, onnx_path = pooled_model
    assert checkpoint.load(ckpt)[0].config.feature_pooling == 3
    assert read_onnx_meta(onnx_path).flow.feature_pooling == 3
    assert ffrt_main(["info", str(onnx_path)]) == 0
    assert "features averaged over 3x3 cells" in capsys.readouterr().out


def test_the_graph_pools_as_pytorch_does(pooled_model, real_images):
    ckpt, onnx_path = pooled_model
    model, _ = checkpoint.load(ckpt)
    pools = [n for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "AveragePool"]
    # One 3x3, stride-1 pool per feature scale, the padding left out of each border mean.
    assert len(pools) == len(model.strides)
    for node in pools:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert list(attrs["kernel_shape"]) == [3, 3] and list(attrs.get("strides", [1, 1])) == [1, 1]
        assert attrs.get("count_include_pad", 0) == 0

    t_map, t_score, o_map, o_score = torch_and_detector(model, onnx_path, real_images)
    print(f"pooled model, PyTorch vs ONNX Runtime: score max rel {np.max(np.abs(o_score - t_score) / np.abs(t_score)):.2e}")
    np.testing.assert_allclose(o_score, t_score, rtol=FP32_RTOL)
    np.testing.assert_allclose(o_map, t_map[:, 0], rtol=0, atol=FP32_RTOL * float(np.abs(t_map).max()))

    # The pooling is a real step of the scores: the same weights without it score otherwise.
    unpooled = AnomalyModel(model.config.model_copy(update={"feature_pooling": 1}), load_pretrained=False)
    unpooled.load_state_dict(model.state_dict())
    with torch.inference_mode():
        _, u_score = unpooled.eval()(to_tensor_batch(real_images))
    assert np.max(np.abs(u_score.numpy() - t_score) / np.abs(t_score)) > 100 * FP32_RTOL


def test_openvino_pools_as_onnxruntime_does(pooled_model, real_images):
    """The CPU runtimes' AveragePool (padding left out) agree within OpenVINO's FP32 score
    tolerance (tests/runtime/test_openvino.py: rel 1e-4)."""
    pytest.importorskip("openvino", reason='OpenVINO is not installed: pip install "ffrt[openvino]" (extra openvino)')
    _, onnx_path = pooled_model
    scores = {}
    for backend, precision in (("onnxruntime-cpu", None), ("openvino", "fp32")):
        det = Detector(onnx_path, backend=backend, precision=precision, color_order="RGB", resize_outputs=False)
        scores[backend] = np.array([r.score for r in det.predict_batch(list(real_images), batch_size=8)])
    rel = np.max(np.abs(scores["openvino"] - scores["onnxruntime-cpu"]) / np.abs(scores["onnxruntime-cpu"]))
    print(f"pooled model, OpenVINO FP32 vs ONNX Runtime: score max rel {rel:.2e}")
    assert rel <= 1e-4

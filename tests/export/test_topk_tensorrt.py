"""Issue 11 item 2: every exportable model must build in TensorRT, whose TopK takes K < 3840.

The score is the mean of the top ceil(0.01*H*W) map pixels: K = 3894 at 624x624, 4096 at
640x640, 10486 at 1024x1024 (the largest size the config allows), and K > 3839 at 256x256 with
--topk-fraction > 0.0586. The head now takes such a K in rounds of <= 3839 (fftrain.head.topk_sum);
ffexport refuses, with one line, any graph with a TopK TensorRT cannot build (ffrt.tensorrt.compat).
Equality with the plain top-k mean is shown on real ELPV images through standardized maps
(which have negative values), in PyTorch and in the exported ONNX run by ONNX Runtime.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch

from ffrt.tensorrt import compat
from fftrain.head import TOPK_MAX_K, AnomalyHead, topk_sum


def _topk_ks(path) -> list[int]:
    model = onnx.load(str(path))
    consts = compat._constants(model.graph)
    return [int(np.asarray(consts[n.input[1]]).reshape(-1)[0]) for n in model.graph.node if n.op_type == "TopK"]


def test_limit_is_the_stricter_of_the_two_sources():
    # tests/runtime/test_tensorrt_bindings.py reads "K up to 3840" from the 10.16 and 11.4 bindings;
    # onnx-tensorrt's operator matrix says "less than 3840". One definition (ffcore.trtlimits).
    import ffcore.trtlimits

    assert TOPK_MAX_K is ffcore.trtlimits.TOPK_MAX_K and TOPK_MAX_K == 3839


@pytest.mark.parametrize("shape", [(3, 4096), (2, 3841), (1, 10486 * 2)])
def test_rounds_select_exactly_the_top_k_multiset(shape):
    # Integer-valued floats: every sum is exact in float32 whatever the order, so the rounds
    # must give bit-identical sums. Heavy ties and negative values included.
    g = torch.Generator().manual_seed(0)
    flat = torch.randint(-40, 40, shape, generator=g).float()
    for k in (1, 3840, 3841, 4000, shape[1] // 2, shape[1]):
        if k > shape[1]:
            continue
        ref = torch.topk(flat, k, dim=1).values.sum(1)
        assert torch.equal(topk_sum(flat, k), ref), k
        assert torch.equal(topk_sum(flat, k, max_k=97), ref), k  # many rounds


def test_old_single_topk_is_refused_with_one_line(tmp_path):
    """Reproduces the defect: a single TopK with K = 3894 (624x624) exports and runs on the CPU,
    and is exactly what TensorRT cannot build; the exporter's check names it."""

    class OldScore(torch.nn.Module):
        def forward(self, m):
            return torch.topk(m.flatten(1), 3894, dim=1).values.mean(dim=1)

    m = torch.randn(1, 1, 624, 624)
    prog = torch.onnx.export(OldScore().eval(), (m,), dynamo=True, opset_version=18, external_data=False, verbose=False)
    path = tmp_path / "old.onnx"
    onnx.save(prog.model_proto, str(path))
    found = compat.problems(path)
    assert len(found) == 1 and "K = 3894" in found[0] and "K <= 3839" in found[0]
    line = compat.refusal("model.onnx", found)
    assert "\n" not in line and line.startswith("model.onnx: TensorRT cannot build this graph (")


def _standardized_model(size: int, real_images_at):
    """A FastFlow at ``size`` with the real EfficientNet-Lite0 backbone, one untrained flow step
    per scale and per-scale standardized maps fitted on real cells (so maps go negative)."""
    from fftrain.config import ModelConfig
    from fftrain.model import AnomalyModel

    torch.manual_seed(0)
    # Scored from every stride: the score is then a reduction of the very map the graph returns.
    model = AnomalyModel(ModelConfig(image_size=size, flow_steps=1, hidden_ratio=0.25, map_normalization="scale",
                                     score_strides=(4, 8, 16))).eval()
    images = real_images_at(size)
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        zs, _ = model.flow(model.extract(x))
        model.head.fit_normalization([model.head.scale_map(z) for z in zs])
    return model, images


@pytest.fixture(scope="module")
def real_images_at(elpv_split):
    from fftrain.data import load_batch

    samples = elpv_split.val[:1] + [s for s in elpv_split.train[:1]]
    return lambda size: load_batch(samples, size)


@pytest.mark.parametrize("size", [640, 1024])
def test_export_at_large_sizes_builds_and_equals_the_top_k_mean(size, real_images_at, tmp_path):
    from ffexport.exporter import export_onnx
    from ffrt.metafile import read_onnx_meta

    model, images = _standardized_model(size, real_images_at)
    k = math.ceil(0.01 * size * size)
    assert k > TOPK_MAX_K and model.head.topk == k
    payload = {"calibration": {"image_threshold": 1.0, "pixel_threshold": 1.0, "source": "test"}}
    path, _ = export_onnx(model, payload, "0" * 64, tmp_path / "model.onnx", batch_max=2)
    ks = _topk_ks(path)
    assert sum(ks) == k and max(ks) <= TOPK_MAX_K and len(ks) == math.ceil(k / TOPK_MAX_K)
    assert compat.problems(path) == []
    assert read_onnx_meta(path).input.height == size

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps, scores = session.run(["anomaly_map", "score"], {"image": images})
    assert (maps < 0).any() and (maps > 0).any()  # standardized: the reduction must not assume >= 0
    # The ONNX's score is the plain top-k mean of its own map ...
    ref = np.sort(maps.reshape(len(images), -1), axis=1)[:, -k:].astype(np.float64).mean(1)
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-6)
    # ... and the PyTorch head (what training evaluated) gives the same score as torch.topk.
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        tmap, tscore = model(x)
        plain = torch.topk(tmap.flatten(1), k, dim=1).values.mean(1)
    np.testing.assert_allclose(tscore.numpy(), plain.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores, tscore.numpy(), rtol=1e-4, atol=1e-5)


def test_small_models_keep_their_single_topk_graph():
    """K <= 3839 (every model up to 616x616 at 1%): the score graph is the one TopK it was."""
    head = AnomalyHead((256, 256), "topk_mean", 0.01)
    m = torch.randn(2, 1, 256, 256)
    assert head.topk == 656
    assert torch.equal(head.score(m), torch.topk(m.flatten(1), 656, dim=1).values.mean(dim=1))


def test_high_topk_fraction_at_256():
    head = AnomalyHead((256, 256), "topk_mean", 0.1)  # K = 6554 > 3839
    m = torch.randn(2, 1, 256, 256) - 0.5
    np.testing.assert_allclose(head.score(m).numpy(), torch.topk(m.flatten(1), head.topk, dim=1).values.mean(1).numpy(),
                               rtol=1e-6, atol=1e-6)

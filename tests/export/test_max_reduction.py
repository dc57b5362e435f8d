"""The ``max`` score reduction end to end: a tiny FastFlow trained with it (the session
checkpoint's settings, tests/conftest.py, with only the reduction changed), exported, and
run by PyTorch, ONNX Runtime and the Detector on real ELPV cells.

Stated tolerances: the graph's score is the maximum of the very map it returns, so in each
engine score == max(map) up to float32 rounding of one value (rel 1e-6); PyTorch vs ONNX
Runtime agree within the export's parity tolerance (ffexport.parity.FP32_RTOL, 1e-3 relative
to the largest reference value). The figures are printed.
"""

from __future__ import annotations

import numpy as np
import pytest

from ffexport.parity import FP32_RTOL
from ffrt.metafile import read_onnx_meta
from support.torch_vs_detector import torch_and_detector
from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.train import TrainSettings, train_and_save

SIZE = 64  # tests/conftest.py TINY_SIZE


@pytest.fixture(scope="module")
def max_model(elpv_split, tmp_path_factory):
    from ffexport.cli import main

    out = tmp_path_factory.mktemp("max_reduction")
    # Scored from every stride and without a memory bank (which weighs into the score and the map
    # separately), so the score is a reduction of the very map the graph returns.
    config = ModelConfig(image_size=SIZE, flow_steps=2, hidden_ratio=1.0, score_reduction="max", score_strides=(4, 8, 16),
                         memory_bank="off")
    train_and_save(config, elpv_split, TrainSettings(epochs=2, batch_size=16, progress=False), out / "model.pt",
                   log=lambda _: None)
    assert main(["--no-bf16", "--ckpt", str(out / "model.pt"), "--out", str(out), "--batch-max", "8"]) == 0
    return out / "model.pt", out / "model.onnx"


def test_metadata_records_the_max_reduction(max_model):
    _, onnx_path = max_model
    assert read_onnx_meta(onnx_path).score.reduction == "max"


def test_score_is_the_maximum_of_the_map_in_pytorch_and_onnxruntime(max_model, real_images):
    ckpt, onnx_path = max_model
    model, _ = checkpoint.load(ckpt)
    t_map, t_score, o_map, o_score = torch_and_detector(model, onnx_path, real_images)

    t_max = t_map.reshape(len(t_map), -1).max(axis=1)
    o_max = o_map.reshape(len(o_map), -1).max(axis=1)
    # Not a degenerate case: the maximum stands out from the top-1% mean the default would give.
    top1 = np.sort(o_map.reshape(len(o_map), -1), axis=1)[:, -max(1, SIZE * SIZE // 100):].mean(axis=1)
    assert np.all(o_max > top1)
    scale = float(np.abs(t_score).max())
    print(f"\nmax |score - max(map)|: torch {np.abs(t_score - t_max).max():.2e}, onnxruntime "
          f"{np.abs(o_score - o_max).max():.2e}; torch vs onnxruntime score rel {np.abs(t_score - o_score).max() / scale:.2e}")
    np.testing.assert_allclose(t_score, t_max, rtol=1e-6)
    np.testing.assert_allclose(o_score, o_max, rtol=1e-6)
    assert np.abs(t_score - o_score).max() <= FP32_RTOL * scale

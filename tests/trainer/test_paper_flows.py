"""The flows are the paper's: its hidden-channel ratio, its parameter counts, and old
checkpoints (written with the earlier, doubled meaning of the ratio) still load as trained."""

from __future__ import annotations

import pytest
import torch

from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.model import AnomalyModel


def _flow_params(model: AnomalyModel) -> int:
    return sum(p.numel() for p in model.flows.parameters())


@pytest.fixture(scope="module")
def wide_resnet_flows():
    # FastFlow paper, Table 7: Wide-ResNet-50-2, 8 steps, 3x3/1x1 alternating.
    return {
        ratio: _flow_params(AnomalyModel(ModelConfig(
            backbone="wide_resnet50_2", random_backbone=True, image_size=64, flow_steps=8,
            conv3x3_only=False, hidden_ratio=ratio)))
        for ratio in (0.5, 1.0, 2.0)
    }


@pytest.mark.parametrize("ratio, paper_millions", [(0.5, 20.7), (1.0, 41.3), (2.0, 82.6)])
def test_wide_resnet_flow_parameters_match_paper_table7(wide_resnet_flows, ratio, paper_millions):
    measured = wide_resnet_flows[ratio] / 1e6
    assert abs(measured - paper_millions) / paper_millions < 0.01, measured


def test_resnet18_flow_parameters_match_paper_table1():
    # Table 1: ResNet-18, 8 steps, 3x3 only, ratio 1.0: 4.9 M flow parameters (the
    # reference code's layer sizes give 4.66 M; the paper rounds its own count).
    model = AnomalyModel(ModelConfig(backbone="resnet18", random_backbone=True, image_size=64, flow_steps=8,
                                     conv3x3_only=True, hidden_ratio=1.0))
    measured = _flow_params(model) / 1e6
    assert abs(measured - 4.9) / 4.9 < 0.06, measured
    # The ratio counts the subnet's input channels (half the features), as in the paper.
    assert model.config.flow_hidden_channels == (32, 64, 128)
    assert [f.steps[0].subnet[0].out_channels for f in model.flows] == [32, 64, 128]


def test_hidden_channels_are_recorded_in_the_checkpoint(tiny_checkpoint):
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    # Lite0 features: 24, 40, 112 channels; ratio 1.0 of half of them.
    assert tuple(payload["config"]["flow_hidden_channels"]) == (12, 20, 56)


def test_checkpoint_without_recorded_hidden_channels_loads_as_trained(tmp_path, real_images):
    """A checkpoint from before the change (no flow_hidden_channels; ratio meant x the full
    feature channels) rebuilds with its own layer sizes and gives the same outputs."""
    old_sizes = (24, 40, 112)  # what ratio 1.0 meant then for Lite0
    model = AnomalyModel(ModelConfig(image_size=64, flow_steps=2, flow_hidden_channels=old_sizes)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.flows.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    path = tmp_path / "old.pt"
    checkpoint.save(path, model, {"image_threshold": 1.0, "pixel_threshold": 1.0}, {})
    payload = torch.load(path, map_location="cpu", weights_only=True)
    legacy = {k: v for k, v in payload["config"].items() if k != "flow_hidden_channels"}
    legacy["image_size"] = 64  # old checkpoints stored one side
    legacy["hidden_ratio"] = 1.0
    payload["config"] = legacy
    torch.save(payload, path)

    loaded, _ = checkpoint.load(path)
    assert loaded.config.flow_hidden_channels == old_sizes
    assert loaded.config.image_size == (64, 64)
    x = torch.from_numpy(real_images[:2]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[1], model(x)[1])

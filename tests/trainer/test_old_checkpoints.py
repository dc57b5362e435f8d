"""A checkpoint written before model kinds existed (fftrain up to commit 297d218) loads as a
FastFlow and scores exactly as that fftrain scored it.

The checkpoint is built here as that fftrain wrote it: its config dict (no ``model`` entry),
its tensor names and shapes (checked against a digest of the old ones), the pretrained
EfficientNet-Lite0 backbone that ships with pip, and norms, flows and head statistics set to
fixed non-trivial values. The expected scores and map statistics were computed by fftrain at
297d218 on the same model and the same eight ELPV cells (``real_images``).
"""

from __future__ import annotations

import hashlib

import pytest
import torch

from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.data import to_tensor_batch
from fftrain.model import AnomalyModel

#: ``model.config.model_dump()`` of fftrain 297d218 for this model (JSON-ready).
OLD_CONFIG = {
    "backbone": "efficientnet_lite0", "random_backbone": False, "image_size": [64, 64], "resize_mode": "stretch",
    "input_color": "rgb", "flow_steps": 2, "hidden_ratio": 1.0, "flow_hidden_channels": [12, 20, 56],
    "conv3x3_only": True, "clamp": 2.0, "map_normalization": "position", "map_blur_sigma": 0.0,
    "score_reduction": "topk_mean", "topk_fraction": 0.01, "seed": 0,
}
#: sha256 of the sorted "name:shape" lines of that fftrain's state_dict for OLD_CONFIG (260 tensors).
OLD_STATE_DIGEST = "314313c52ae64a428027b8f0f20a4751daf1109d097be3305122c4004f3a1b85"
#: Computed by fftrain 297d218 (PyTorch FP32) on real_images.
OLD_SCORES = [61.03500747680664, 64.31355285644531, 79.1211166381836, 67.09950256347656, 85.32991027832031,
              121.01631927490234, 74.37564086914062, 80.6186752319336]
OLD_MAP_MEANS = [30.146297454833984, 32.890846252441406, 32.204689025878906, 34.44631576538086, 34.47816467285156,
                 50.7464485168457, 24.870683670043945, 28.638961791992188]
OLD_MAP_MAXES = [63.21773147583008, 65.38898468017578, 84.34647369384766, 71.20806884765625, 98.2911148071289,
                 130.05458068847656, 84.81211853027344, 92.24913787841797]


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _old_checkpoint(path) -> None:
    """Write the checkpoint as fftrain 297d218 wrote it: its config dict, its tensors."""
    model = AnomalyModel(ModelConfig.model_validate(OLD_CONFIG))
    state = model.state_dict()
    assert len(state) == 260 and _state_digest(state) == OLD_STATE_DIGEST, "the test's model is not the old one"
    trained = sorted(k for k, v in state.items() if not k.startswith("backbone.") and v.is_floating_point())
    for i, name in enumerate(trained):
        base = 1.0 if (name.startswith("norms.") and name.endswith(".weight")) or "inv_scale" in name else 0.0
        wave = torch.sin(torch.arange(state[name].numel(), dtype=torch.float64) * 0.61 + i)
        state[name] = (base + 0.2 * wave).float().view(state[name].shape)
    torch.save({
        "format": "fftrain.checkpoint", "format_version": 1, "config": OLD_CONFIG,
        "backbone_sha256": model.backbone_sha256, "state_dict": state,
        "calibration": {"image_threshold": 70.0, "pixel_threshold": 80.0, "target_frr": 0.02},
        "train_info": {},
    }, path)


def test_a_checkpoint_from_before_model_kinds_loads_as_fastflow_and_scores_as_it_did(tmp_path, real_images):
    path = tmp_path / "old.pt"
    _old_checkpoint(path)
    model, payload = checkpoint.load(path)
    assert model.config.model == "fastflow" and "model" not in payload["config"]
    assert model.config.score_strides == (4, 8, 16)  # its score came from every stride; a new one's does not
    with torch.no_grad():
        amap, score = model(to_tensor_batch(real_images))
    # Float re-association between thread counts moves these by ~1e-7 relative; a different
    # map (a log-determinant counted, a norm or flow step changed) moves them by far more.
    assert score.tolist() == pytest.approx(OLD_SCORES, rel=1e-5)
    assert amap.flatten(1).mean(1).tolist() == pytest.approx(OLD_MAP_MEANS, rel=1e-5)
    assert amap.flatten(1).amax(1).tolist() == pytest.approx(OLD_MAP_MAXES, rel=1e-5)

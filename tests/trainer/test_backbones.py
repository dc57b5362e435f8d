"""Backbones: real offline weights, the right feature strides, never a download."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fftrain.backbones import BackboneWeightsError, build_feature_extractor, load_classifier

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper portrait


def _grace_hopper_224() -> torch.Tensor:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # a real photo, shipped offline
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    s = min(h, w)
    rgb = rgb[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    rgb = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


def test_lite0_weights_are_real_imagenet_weights():
    model, sha = load_classifier("efficientnet_lite0")
    x = (_grace_hopper_224() - 0.5) / 0.5  # the normalization recorded in BACKBONES
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM
    assert len(sha) == 64
    # Random weights do not find the uniform: the test can tell real from fake.
    from fftrain.backbones import build_classifier

    torch.manual_seed(0)
    with torch.no_grad():
        assert int(build_classifier("efficientnet_lite0").eval()(x).argmax()) != MILITARY_UNIFORM


@pytest.mark.parametrize("name, channels", [("efficientnet_lite0", (24, 40, 112)), ("resnet18", (64, 128, 256))])
def test_feature_maps_at_strides_4_8_16(name, channels):
    features, sha = build_feature_extractor(name, random=True)
    assert sha is None
    with torch.no_grad():
        maps = features(torch.zeros(1, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16))]
    assert not any(p.requires_grad for p in features.parameters())  # frozen


def test_missing_resnet_weights_is_a_clear_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(BackboneWeightsError, match="never downloads"):
        build_feature_extractor("resnet18")


def test_resnet_weights_from_a_user_file(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    model, sha = load_classifier("resnet18", path)
    torch.testing.assert_close(model.conv1.weight, reference.conv1.weight)
    assert len(sha) == 64


def test_weights_of_another_architecture_are_refused(tmp_path):
    import torchvision

    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(BackboneWeightsError, match="not wide_resnet50_2 weights"):
        load_classifier("wide_resnet50_2", path)


def test_pickled_code_in_a_weights_file_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": Path("/")}, path)  # an arbitrary object: needs unpickling code to load
    with pytest.raises(BackboneWeightsError, match="not a loadable weights file"):
        load_classifier("resnet18", path)

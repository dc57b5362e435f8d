"""Backbones: real offline weights, the right feature strides, never a download."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fftrain.backbones import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_VARIANTS,
    BackboneWeightsError,
    EfficientNetLite,
    build_classifier,
    build_feature_extractor,
    file_sha256,
    lite_weights_path,
    load_classifier,
)

MILITARY_UNIFORM = 652  # ImageNet class of the classic Grace Hopper portrait
# What she wears in that portrait: military uniform, suit, bow tie, Windsor tie.
GARMENTS = (MILITARY_UNIFORM, 834, 457, 906)

# Stage layouts (kernel, stride, expand, in, out, repeats), read off the shapes in each
# shipped weights file: Lite1 deepens stages 1-5 (x1.1), Lite2 also widens them (x1.1,
# x1.2); the stem (32), the first and last stage's repeats and the head (1280) stay put.
LITE_LAYOUTS = {
    "efficientnet_lite0": ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
                           (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1)),
    "efficientnet_lite1": ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 3), (5, 2, 6, 24, 40, 3), (3, 2, 6, 40, 80, 4),
                           (5, 1, 6, 80, 112, 4), (5, 2, 6, 112, 192, 5), (3, 1, 6, 192, 320, 1)),
    "efficientnet_lite2": ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 3), (5, 2, 6, 24, 48, 3), (3, 2, 6, 48, 88, 4),
                           (5, 1, 6, 88, 120, 4), (5, 2, 6, 120, 208, 5), (3, 1, 6, 208, 352, 1)),
}
LITE_TAPS = {  # (block indices, channels) of the last block at strides 4, 8, 16
    "efficientnet_lite0": ((2, 4, 10), (24, 40, 112)),
    "efficientnet_lite1": ((3, 6, 14), (24, 40, 112)),
    "efficientnet_lite2": ((3, 6, 14), (24, 48, 120)),
}


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
    torch.manual_seed(0)
    with torch.no_grad():
        assert int(build_classifier("efficientnet_lite0").eval()(x).argmax()) != MILITARY_UNIFORM


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_lite2_weights_are_real_imagenet_weights(name):
    """The same photo and preprocessing as for Lite0. Lite1 ranks the uniform first; Lite2
    ranks the bow tie first and the uniform fourth (it does so at most input sizes, not
    only at 224). So the check is: the top class is something she wears, the uniform is in
    the top 5, and the garments she wears hold a large share of the probability."""
    model, _ = load_classifier(name)
    x = (_grace_hopper_224() - 0.5) / 0.5  # the normalization recorded in BACKBONES
    assert BACKBONES[name].mean == (0.5, 0.5, 0.5) and BACKBONES[name].std == (0.5, 0.5, 0.5)
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) in GARMENTS
    assert MILITARY_UNIFORM in probs.topk(5).indices.tolist()
    assert float(probs[list(GARMENTS)].sum()) > 0.4  # uniform guessing: 0.004
    torch.manual_seed(0)
    with torch.no_grad():
        random = build_classifier(name).eval()(x).softmax(1)[0]
    assert float(random[list(GARMENTS)].sum()) < 0.05 and int(random.argmax()) not in GARMENTS


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_lite_normalization_matches_the_weights_batch_norm_statistics(name):
    """A photo's activations entering the first batch norms, scaled the way BACKBONES
    says, must match the running statistics stored in the weights file, and clearly
    better than the ImageNet mean/std, raw [0, 1] input or another scale would. (The
    photo's top class alone can not tell [-1, 1] from [0, 1] input.)"""
    model, _ = load_classifier(name)
    first = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)][:3]  # stem, block 0

    def mismatch(mean, std) -> float:
        seen = []
        hooks = [bn.register_forward_hook(lambda bn, inp, out: seen.append((bn, inp[0]))) for bn in first]
        with torch.no_grad():
            model((_grace_hopper_224() - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        for h in hooks:
            h.remove()
        total = 0.0
        for bn, x in seen:  # |mean offset| in running std units + |log variance ratio|, per channel
            var = bn.running_var.clamp_min(1e-6)
            total += float(((x.mean((0, 2, 3)) - bn.running_mean).abs() / var.sqrt()).mean())
            total += float((x.var((0, 2, 3)).clamp_min(1e-6) / var).log().abs().mean())
        return total / len(seen)

    recorded = mismatch(BACKBONES[name].mean, BACKBONES[name].std)
    others = [mismatch(IMAGENET_MEAN, IMAGENET_STD), mismatch((0.0,) * 3, (1.0,) * 3),
              mismatch((0.5,) * 3, (1.0,) * 3), mismatch((0.5,) * 3, (0.25,) * 3)]
    assert recorded < 0.6
    assert all(other > 2 * recorded for other in others), (recorded, others)


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_lite_weights_load_strictly_into_the_derived_layout(name):
    path = lite_weights_path(name)
    assert LITE_VARIANTS[name].stages == LITE_LAYOUTS[name]
    assert (LITE_VARIANTS[name].taps, LITE_VARIANTS[name].channels) == LITE_TAPS[name]
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite(name)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected  # every key, every shape
    assert not model.load_state_dict(state, strict=True).missing_keys
    _, sha = load_classifier(name)
    assert sha == file_sha256(path)
    assert sha[:8] in path.name  # torch hub's naming: the file is the one its publisher hashed


@pytest.mark.parametrize("name, channels", [
    ("efficientnet_lite0", (24, 40, 112)),
    ("efficientnet_lite1", (24, 40, 112)),
    ("efficientnet_lite2", (24, 48, 120)),
    ("resnet18", (64, 128, 256)),
])
def test_feature_maps_at_strides_4_8_16(name, channels):
    features, sha = build_feature_extractor(name, random=True)
    assert sha is None
    with torch.no_grad():
        maps = features(torch.zeros(1, 3, 64, 96))
    assert [tuple(m.shape[1:]) for m in maps] == [(c, 64 // s, 96 // s) for c, s in zip(channels, (4, 8, 16))]
    assert not any(p.requires_grad for p in features.parameters())  # frozen


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_fastflow_builds_and_runs_on_each_new_lite_backbone(name):
    from fftrain.config import ModelConfig
    from fftrain.model import AnomalyModel

    model = AnomalyModel(ModelConfig(backbone=name, image_size=64)).eval()
    assert model.backbone_sha256 == file_sha256(lite_weights_path(name))
    assert model.feature_shapes == [(c, 64 // s, 64 // s) for c, s in zip(LITE_TAPS[name][1], (4, 8, 16))]
    with torch.no_grad():
        amap, score = model(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert tuple(amap.shape) == (2, 1, 64, 64) and tuple(score.shape) == (2,)
    assert torch.isfinite(amap).all() and torch.isfinite(score).all()


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

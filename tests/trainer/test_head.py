"""The anomaly head on its own: units, reductions and the fitted map standardization."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fftrain.head import AnomalyHead


def test_plain_map_is_half_the_mean_square_and_scales_are_averaged():
    head = AnomalyHead((8, 8), "max", 0.01)
    z1 = torch.full((1, 4, 4, 4), 2.0)  # 0.5 * 4 = 2 everywhere
    z2 = torch.full((1, 6, 2, 2), 1.0)  # 0.5 * 1 = 0.5 everywhere
    amap, score = head([z1, z2])
    assert amap.shape == (1, 1, 8, 8)
    torch.testing.assert_close(amap, torch.full((1, 1, 8, 8), 1.25))
    assert float(score) == pytest.approx(1.25)


def test_topk_mean_averages_the_k_highest_pixels():
    head = AnomalyHead((10, 10), "topk_mean", 0.05)  # k = 5
    assert head.topk == 5
    amap = torch.zeros(1, 1, 10, 10)
    amap.view(-1)[:7] = torch.tensor([10.0, 9, 8, 7, 6, 5, 4])
    assert float(head.score(amap)) == pytest.approx((10 + 9 + 8 + 7 + 6) / 5)
    assert float(AnomalyHead((10, 10), "max", 0.05).score(amap)) == 10.0


@pytest.mark.parametrize("mode", ["scale", "position"])
def test_fitted_standardization_makes_normal_maps_zero_mean_unit_std(mode):
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 6), (2, 3)]
    head = AnomalyHead((8, 12), "max", 0.01, map_shapes=shapes, normalization=mode)
    # Normal maps whose level depends on the position (e.g. a busbar row that the flow fits worse).
    base = [torch.linspace(0.5, 3.0, h * w).view(1, 1, h, w) for h, w in shapes]
    raw = [b + 0.2 * b * torch.randn(200, 1, *b.shape[2:], generator=gen) for b in base]
    head.fit_normalization(raw)
    zs = [torch.sqrt(2 * r) for r in raw]  # channel 1: scale_map(z) == r
    std_maps = head.scale_maps(zs)
    for m in std_maps:
        if mode == "position":
            assert float(m.mean(0).abs().max()) < 1e-4  # per position: mean 0
            assert float((m.std(0) - 1).abs().max()) < 1e-3  # and std 1 (the floor is not reached here)
        else:
            assert abs(float(m.mean())) < 1e-4 and abs(float(m.std()) - 1) < 1e-3
    # Only the per-position head removes the position dependence.
    spread = float(std_maps[0].mean(0).max() - std_maps[0].mean(0).min())
    assert (spread < 1e-3) == (mode == "position")


def test_unfitted_normalizing_head_is_the_plain_head():
    z = [torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)]
    plain = AnomalyHead((8, 8), "topk_mean", 0.1)
    norm = AnomalyHead((8, 8), "topk_mean", 0.1, map_shapes=[(4, 4), (2, 2)], normalization="position")
    for a, b in zip(plain(z), norm(z)):
        torch.testing.assert_close(a, b)


def test_std_floor_keeps_a_position_where_normals_agree_from_exploding():
    raw = [torch.ones(50, 1, 2, 2) + 0.1 * torch.randn(50, 1, 2, 2)]
    raw[0][:, :, 0, 0] = 1.0  # every normal identical here: std 0
    head = AnomalyHead((4, 4), "max", 0.01, map_shapes=[(2, 2)], normalization="position")
    head.fit_normalization(raw, min_std_fraction=0.25)
    inv = head.inv_scale0[0, 0]
    floor = 0.25 * float(raw[0].std(0).mean())  # the documented floor: a quarter of the mean std
    assert math.isfinite(float(inv[0, 0])) and float(inv[0, 0]) == pytest.approx(1 / floor, rel=1e-4)
    assert float(inv[1, 1]) < 15  # positions with real spread keep their own std (about 0.1)


def test_blur_smooths_a_single_hot_pixel_and_keeps_a_constant_map():
    head = AnomalyHead((32, 32), "max", 0.01, blur_sigma=2.0)
    flat = torch.full((1, 1, 32, 32), 3.0)
    torch.testing.assert_close(head.blur(flat), flat)  # replicate padding: no dark border
    spike = torch.zeros(1, 1, 32, 32)
    spike[0, 0, 16, 16] = 1.0
    out = head.blur(spike)
    assert float(out.sum()) == pytest.approx(1.0, rel=1e-4)  # mass kept away from the border
    assert float(out.max()) < 0.05 and float(out[0, 0, 16, 16]) == float(out.max())
    # a 2-D Gaussian of sigma 2: the centre holds 1 / (2 pi sigma^2) of the mass
    assert float(out[0, 0, 16, 16]) == pytest.approx(1 / (2 * math.pi * 4), rel=0.02)


def test_the_score_can_come_from_some_scales_while_the_map_fuses_all():
    """Maps built by hand (constant per scale, so every resize keeps the value): the map is the
    mean of all three scales, the score the mean of the chosen ones only."""
    shapes = [(8, 8), (4, 4), (2, 2)]
    z = [torch.full((1, 2, h, w), math.sqrt(2 * v)) for (h, w), v in zip(shapes, (6.0, 1.0, 2.0))]  # maps 6, 1, 2
    for matrices in (shapes, ()):  # the constant fusion matrices, and the step-by-step fusion
        every = AnomalyHead((16, 16), "max", 0.01, map_shapes=matrices)
        deep = AnomalyHead((16, 16), "max", 0.01, map_shapes=matrices, score_scales=(1, 2))
        (map_all, score_all), (map_deep, score_deep) = every(z), deep(z)
        torch.testing.assert_close(map_deep, map_all)
        torch.testing.assert_close(map_all, torch.full((1, 1, 16, 16), 3.0))
        assert float(score_all) == pytest.approx(3.0) and float(score_deep) == pytest.approx(1.5)


def test_score_scales_fuse_like_the_map_with_blur_and_standardization():
    """On random maps with blur and per-position standardization, the score from scales (1, 2)
    equals the top-k mean of the reference fusion (interpolate, mean, blur) of those two
    standardized maps, computed here without the head's fusion matrices."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(16, 12), (8, 6), (4, 3)]
    head = AnomalyHead((32, 24), "topk_mean", 0.05, map_shapes=shapes, normalization="position", blur_sigma=1.5,
                       score_scales=[2, 1])
    head.fit_normalization([torch.rand(20, 1, h, w, generator=gen) + 0.5 for h, w in shapes])
    z = [torch.randn(3, 4, h, w, generator=gen) for h, w in shapes]
    amap, score = head(z)
    std = head.scale_maps(z)
    chosen = [F.interpolate(m, size=(32, 24), mode="bilinear", align_corners=False) for m in std[1:]]
    expected_map = head.blur((chosen[0] + chosen[1]) / 2)
    expected = torch.topk(expected_map.flatten(1), head.topk, dim=1).values.mean(1)
    torch.testing.assert_close(score, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(amap, head.fuse_reference(std), rtol=1e-4, atol=1e-5)  # the map: all three


@pytest.mark.parametrize("bad", [(), (3,), (0, 5)])
def test_score_scales_must_name_existing_scales(bad):
    with pytest.raises(ValueError, match="score_scales"):
        AnomalyHead((16, 16), "max", 0.01, map_shapes=[(8, 8), (4, 4), (2, 2)], score_scales=bad)


def test_fastflow_scores_from_strides_8_and_16_by_default_cflow_from_all():
    from fftrain.config import ModelConfig
    from fftrain.model import AnomalyModel

    assert ModelConfig().score_strides == (8, 16)
    assert ModelConfig(model="cflow").score_strides == (4, 8, 16)
    assert ModelConfig(score_strides=[16, 4]).score_strides == (4, 16)
    model = AnomalyModel(ModelConfig(image_size=(64, 64), flow_steps=1, random_backbone=True), load_pretrained=False)
    assert model.head.score_scales == (1, 2)  # indices of strides 8 and 16 among the backbone's 4, 8, 16
    every = AnomalyModel(ModelConfig(image_size=(64, 64), flow_steps=1, random_backbone=True, score_strides=(4, 8, 16)),
                         load_pretrained=False)
    assert every.head.score_scales is None  # the score is the anomaly map's
    for bad in ([], [2], [8, 32], "deep"):
        with pytest.raises(ValueError, match="score strides"):
            ModelConfig(score_strides=bad)

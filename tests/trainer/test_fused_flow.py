"""The shipped form of the flow and of the head's fusion compute what the trained modules
compute: FusedFlow2d == Flow2d up to the last (free) channel order, and the head's
matrix fusion == interpolate + mean + blur."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fftrain.flow import Flow2d
from fftrain.fused_flow import FusedFlow2d
from fftrain.head import AnomalyHead
from fftrain.resize import bilinear_matrix, blur_matrix


def _trained_like(flow: Flow2d, scale: float = 0.3) -> Flow2d:
    # A fresh flow is the identity (zero last convs, zero affine); perturb every parameter,
    # the per-channel affine included, so that each folded piece matters.
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return flow.eval()


@pytest.mark.parametrize("channels,conv3x3_only", [(8, True), (7, False), (24, False), (5, True)])
def test_fused_flow_equals_flow_up_to_the_last_channel_order(channels, conv3x3_only):
    flow = _trained_like(Flow2d(channels, steps=4, hidden=6, conv3x3_only=conv3x3_only, clamp=2.0, seed=3).double())
    x = torch.randn(2, channels, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        z, _ = flow(x)
        kept, changed = FusedFlow2d(flow)(x)
    # The last step's permutation is left out: z == cat(halves) permuted by it.
    last = flow.steps[-1].permutation
    expected = torch.cat([kept, changed], dim=1).index_select(1, last)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(expected, z, rtol=1e-10, atol=1e-10)


def test_every_folded_piece_matters():
    """Dropping the affine shift of a middle step must change z (the fold is not vacuous)."""
    flow = _trained_like(Flow2d(8, steps=3, hidden=8, conv3x3_only=True, clamp=2.0, seed=1).double())
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    fused = FusedFlow2d(flow)
    with torch.no_grad():
        ref = torch.cat(fused(x), 1)
        fused.steps[1].to_kept.from_kept.bias.zero_()
        assert (torch.cat(fused(x), 1) - ref).abs().max() > 1e-3


def test_fused_flow_in_float32_matches_to_rounding():
    flow = _trained_like(Flow2d(64, steps=8, hidden=32, conv3x3_only=True, clamp=2.0, seed=0), scale=0.02)
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        z, _ = flow(x)
        parts = FusedFlow2d(flow)(x)
    head_map = AnomalyHead.scale_map(z)
    fused_map = AnomalyHead.scale_map(parts)
    assert head_map.max() > 2 * head_map.min() > 0  # a map with contrast, not a constant
    torch.testing.assert_close(fused_map, head_map, rtol=2e-5, atol=1e-5)


def test_scale_map_of_channel_groups_is_the_mean_over_all_channels():
    z = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]).view(1, 5, 1, 1)
    # 0.5 * (1 + 4 + 9 + 16 + 25) / 5 = 5.5, however the channels are grouped
    assert AnomalyHead.scale_map(z).item() == pytest.approx(5.5)
    assert AnomalyHead.scale_map((z[:, :2], z[:, 2:])).item() == pytest.approx(5.5)


@pytest.mark.parametrize("out_size,in_size", [(256, 64), (256, 16), (300, 37), (7, 3), (5, 9), (16, 16)])
def test_bilinear_matrix_is_torch_interpolate(out_size, in_size):
    x = torch.randn(in_size, dtype=torch.float64)
    ref = F.interpolate(x.view(1, 1, 1, -1), size=(1, out_size), mode="bilinear", align_corners=False).flatten()
    torch.testing.assert_close(bilinear_matrix(out_size, in_size) @ x, ref, rtol=1e-12, atol=1e-12)


def test_blur_matrix_keeps_a_flat_map_flat_and_spreads_a_spike():
    b = blur_matrix(20, 2.0)
    torch.testing.assert_close(b.sum(1), torch.ones(20, dtype=torch.float64))  # replicated edges: rows sum to 1
    spike = torch.zeros(20, dtype=torch.float64)
    spike[10] = 1.0
    out = b @ spike
    assert out[10] < 1 and out[8] > 0 and out.argmax() == 10
    assert torch.equal(blur_matrix(6, 0.0), torch.eye(6, dtype=torch.float64))


@pytest.mark.parametrize("image_size,shapes,sigma", [
    ((256, 256), [(64, 64), (32, 32), (16, 16)], 0.0),
    ((256, 320), [(32, 40), (16, 20), (8, 10)], 4.0),  # non-square
    ((300, 300), [(37, 37), (18, 18)], 2.0),  # sizes that do not divide
])
def test_head_fusion_by_matrices_equals_interpolate_mean_blur(image_size, shapes, sigma):
    head = AnomalyHead(image_size, "max", 0.01, map_shapes=shapes, blur_sigma=sigma)
    gen = torch.Generator().manual_seed(0)
    maps = [torch.rand(3, 1, h, w, generator=gen) * 20 for h, w in shapes]
    ref = head.fuse_reference(maps)
    got = head.fuse(maps)
    assert got.shape == ref.shape == (3, 1, *image_size)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=2e-5)

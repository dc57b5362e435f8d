"""The 2D normalizing flow: invertible, exact log-determinant, export-friendly."""

from __future__ import annotations

import pytest
import torch

from fftrain.flow import Flow2d, FlowStep


def _randomize(module: torch.nn.Module, scale: float = 0.3) -> None:
    # Steps start as the identity (zero-initialized last conv); perturb them so the tests
    # exercise a real, non-trivial coupling.
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.parametrize("conv3x3_only", [True, False])
def test_inverse_of_forward_is_identity(conv3x3_only):
    flow = Flow2d(channels=7, steps=4, hidden=7, conv3x3_only=conv3x3_only, clamp=2.0, seed=0).double()
    _randomize(flow)
    x = torch.randn(2, 7, 5, 6, dtype=torch.float64)
    z, _ = flow(x)
    assert not torch.allclose(z, x)  # the flow does something
    torch.testing.assert_close(flow.inverse(z), x, atol=1e-8, rtol=1e-8)  # float64 round-off through exp()


def test_logdet_matches_autograd_jacobian():
    """log|det dz/dx| from the flow == slogdet of the full Jacobian (a 3x3x4 case: 36x36)."""
    flow = Flow2d(channels=4, steps=3, hidden=4, conv3x3_only=True, clamp=2.0, seed=3).double()
    _randomize(flow, 0.5)
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: flow(t)[0], x).reshape(36, 36)
    sign, logabsdet = torch.linalg.slogdet(jac)
    _, logdet_map = flow(x)
    assert sign != 0
    torch.testing.assert_close(logdet_map.sum(), logabsdet, atol=1e-9, rtol=1e-9)


def test_kernels_alternate_unless_3x3_only():
    alt = Flow2d(8, steps=4, hidden=8, conv3x3_only=False, clamp=2.0, seed=0)
    only3 = Flow2d(8, steps=4, hidden=8, conv3x3_only=True, clamp=2.0, seed=0)
    assert [s.subnet[0].kernel_size[0] for s in alt.steps] == [3, 1, 3, 1]
    assert [s.subnet[0].kernel_size[0] for s in only3.steps] == [3, 3, 3, 3]


def test_permutation_is_fixed_and_a_true_permutation():
    a = Flow2d(16, steps=2, hidden=16, conv3x3_only=True, clamp=2.0, seed=5)
    b = Flow2d(16, steps=2, hidden=16, conv3x3_only=True, clamp=2.0, seed=5)
    for sa, sb in zip(a.steps, b.steps):
        assert torch.equal(sa.permutation, sb.permutation)  # same seed, same flow
        assert sorted(sa.permutation.tolist()) == list(range(16))
        assert torch.equal(sa.permutation[sa.inverse_permutation], torch.arange(16))


def test_scales_are_soft_clamped():
    step = FlowStep(4, hidden=4, kernel=3, clamp=1.5, permutation=torch.arange(4))
    with torch.no_grad():
        step.subnet[-1].bias.fill_(100.0)  # a subnet asking for an enormous scale
    with torch.no_grad():
        _, logdet = step(torch.randn(1, 4, 2, 2))
    # 2 changed channels, each |scale| <= clamp
    assert float(logdet.abs().max()) <= 2 * 1.5 + 1e-6


def test_new_step_is_identity():
    step = FlowStep(6, hidden=6, kernel=3, clamp=2.0, permutation=torch.arange(6))
    x = torch.randn(2, 6, 4, 4)
    y, logdet = step(x)
    torch.testing.assert_close(y, x)
    assert float(logdet.abs().max()) == 0.0

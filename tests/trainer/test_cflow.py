"""CFLOW-AD's decoder: the positional encoding, each coupling's log-determinant against
autograd's Jacobian, the 1x1-convolution form against a position-by-position reference, the
sampling of training vectors, training, and the configuration rules of the kind."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from ffcore.modelkinds import MODEL_KINDS
from fftrain.cflow import CflowDecoder, ConditionalCoupling, positional_encoding
from fftrain.cflow_conv import ConvCflowDecoder
from fftrain.config import ModelConfig
from fftrain.head import AnomalyHead, ScaleLatent
from fftrain.kinds import KINDS
from fftrain.model import AnomalyModel
from fftrain.train import TrainSettings, extract_features, for_kind


def _randomized(module: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Non-trivial weights everywhere (a new coupling is the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen))
    return module.eval()


def test_positional_encoding_is_the_papers_sine_cosine_pairs():
    pe = positional_encoding(8, 3, 5)  # half = 4: columns in channels 0-3, rows in 4-7
    assert pe.shape == (8, 3, 5)
    slow = 10000 ** (-2 / 4)  # the second frequency of a half of 4 channels
    for i in range(3):
        for j in range(5):
            expected = [math.sin(j), math.cos(j), math.sin(j * slow), math.cos(j * slow),
                        math.sin(i), math.cos(i), math.sin(i * slow), math.cos(i * slow)]
            assert pe[:, i, j].tolist() == pytest.approx(expected, abs=1e-6)
    # every position gets its own condition
    flat = pe.flatten(1).T
    assert len({tuple(v.tolist()) for v in flat}) == 15
    with pytest.raises(ValueError, match="multiple of 4"):
        positional_encoding(6, 2, 2)


@pytest.mark.parametrize("channels", [6, 7])
def test_each_couplings_log_determinant_is_autograds(channels):
    torch.manual_seed(1)
    coupling = _randomized(ConditionalCoupling(channels, condition=4, hidden=9, clamp=1.5,
                                               permutation=torch.randperm(channels)), seed=channels)
    x, condition = torch.randn(5, channels), torch.randn(5, 4)
    with torch.no_grad():
        _, logdet = coupling(x, coupling.condition_term(condition))
    for k in range(5):
        term = coupling.condition_term(condition[k : k + 1])
        jac = torch.autograd.functional.jacobian(lambda v: coupling(v[None], term)[0][0], x[k])
        sign, logabs = torch.linalg.slogdet(jac.double())
        assert float(sign) != 0
        assert float(logdet[k]) == pytest.approx(float(logabs), abs=1e-5)


def test_the_decoders_log_determinant_is_autograds_over_all_couplings():
    decoder = _randomized(CflowDecoder(5, (2, 2), steps=4, hidden=8, condition=4, clamp=2.0, seed=3), seed=4)
    x = torch.randn(3, 5)
    condition = decoder.condition.flatten(1).T[:3]
    with torch.no_grad():
        _, logdet = decoder.fibers(x, condition)
    for k in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: decoder.fibers(v[None], condition[k : k + 1])[0][0], x[k])
        assert float(logdet[k]) == pytest.approx(float(torch.linalg.slogdet(jac.double())[1]), abs=1e-5)


@pytest.mark.parametrize("channels", [6, 9])
def test_the_convolution_form_equals_the_decoder_position_by_position(channels):
    decoder = _randomized(CflowDecoder(channels, (4, 5), steps=3, hidden=10, condition=8, clamp=2.0, seed=7), seed=8)
    maps = torch.randn(2, channels, 4, 5)
    with torch.no_grad():
        latent = ConvCflowDecoder(decoder)(maps)
        # The fiber loop of the reference implementation, one position at a time.
        z_ref, logdet_ref = torch.zeros_like(maps), torch.zeros(2, 4, 5)
        for n in range(2):
            for i in range(4):
                for j in range(5):
                    z, ld = decoder.fibers(maps[n, :, i, j][None], decoder.condition[:, i, j][None])
                    z_ref[n, :, i, j], logdet_ref[n, i, j] = z[0], ld[0]
    assert isinstance(latent, ScaleLatent)
    # The shipped form leaves the last permutation out (the head only reduces over channels).
    z_conv = torch.cat(latent.z, dim=1)[:, decoder.steps[-1].permutation]
    torch.testing.assert_close(z_conv, z_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(latent.logdet, logdet_ref, atol=1e-5, rtol=1e-5)
    # and the whole-map trained form is the same function
    with torch.no_grad():
        z_all, logdet_all = decoder(maps)
    torch.testing.assert_close(z_all, z_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logdet_all, logdet_ref, atol=1e-5, rtol=1e-5)


def test_the_head_map_of_a_cflow_latent_is_the_negative_log_likelihood_per_channel():
    z = torch.full((1, 4, 2, 2), 2.0)  # 0.5 * sum z^2 = 8 per position
    logdet = torch.tensor([[[4.0, 0.0], [-4.0, 8.0]]])
    m = AnomalyHead.scale_map(ScaleLatent((z[:, :1], z[:, 1:]), logdet))
    torch.testing.assert_close(m, torch.tensor([[[[1.0, 2.0], [3.0, 0.0]]]]))  # (8 - logdet) / 4


def test_sampled_vectors_are_decoded_with_the_condition_of_their_position():
    decoder = _randomized(CflowDecoder(3, (4, 6), steps=2, hidden=4, condition=8, clamp=2.0, seed=0))
    maps = torch.zeros(2, 3, 4, 6)
    for n in range(2):  # each vector says where it is: (image, row, column)
        maps[n, 0], maps[n, 1] = n, torch.arange(4.0)[:, None]
        maps[n, 2] = torch.arange(6.0)[None, :]
    vectors, positions = decoder.sample(maps, 4000, torch.Generator().manual_seed(0))
    assert vectors.shape == (4000, 3) and positions.shape == (4000,)
    rows, cols = vectors[:, 1].long(), vectors[:, 2].long()
    assert torch.equal(positions, rows * 6 + cols)
    # uniform over all 2 x 4 x 6 positions: every one drawn
    assert len({tuple(v.tolist()) for v in vectors}) == 48
    with torch.no_grad():
        z, logdet = decoder.at_positions(vectors, positions)
        z_ref, logdet_ref = decoder.fibers(vectors, decoder.condition[:, rows, cols].T)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(logdet, logdet_ref)


def test_cflow_trains_on_sampled_positions_of_real_features(real_images):
    torch.manual_seed(0)
    model = AnomalyModel(ModelConfig(model="cflow", image_size=64, flow_steps=2, condition_channels=16))
    feats = extract_features(model, real_images, progress=False)
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(not p.requires_grad for p in model.backbone.parameters()) and not list(model.norms.parameters())
    opt = torch.optim.Adam(params, lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    losses = []
    for _ in range(30):
        loss = model.training_nll(feats, gen, 512)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses[::10]
    with torch.no_grad():  # the whole-map likelihood improved too, not only the sampled one
        fresh = AnomalyModel(ModelConfig(model="cflow", image_size=64, flow_steps=2, condition_channels=16))
        assert float(model.nll_per_dim(*model.flow(feats)).mean()) < float(fresh.nll_per_dim(*fresh.flow(feats)).mean())


def test_cflow_configs_refuse_what_the_kind_cannot_do():
    assert ModelConfig(model="cflow").conv3x3_only is False  # 1x1 couplings
    with pytest.raises(ValidationError, match="fully connected"):
        ModelConfig(model="cflow", conv3x3_only=True)
    with pytest.raises(ValidationError, match="no fixed zero"):
        ModelConfig(model="cflow", map_normalization="none")
    with pytest.raises(ValidationError, match="multiple of 4"):
        ModelConfig(model="cflow", condition_channels=30)
    with pytest.raises(ValidationError):
        ModelConfig(model="padim")


def test_every_kind_has_one_row_and_old_configs_are_fastflow():
    assert tuple(KINDS) == MODEL_KINDS and all(k.name == name for name, k in KINDS.items())
    old = ModelConfig().model_dump()
    del old["model"], old["condition_channels"]
    assert ModelConfig.model_validate(old).model == "fastflow"


def test_cflow_hidden_width_counts_the_condition():
    model = AnomalyModel(ModelConfig(model="cflow", image_size=64, flow_steps=1, hidden_ratio=0.5,
                                     condition_channels=16, random_backbone=True))
    # Lite0 features: 24, 40, 112 channels; subnet input = half of them + 16
    assert model.config.flow_hidden_channels == (14, 18, 36)
    assert [d.steps[0].inner.in_features for d in model.flows] == [28, 36, 72]
    assert [d.steps[0].inner.out_features for d in model.flows] == [14, 18, 36]


def test_training_settings_left_open_take_the_kinds_step_defaults():
    fastflow, cflow = for_kind(TrainSettings(), KINDS["fastflow"]), for_kind(TrainSettings(), KINDS["cflow"])
    assert (fastflow.lr, fastflow.batch_size, fastflow.positions_per_step) == (1e-3, 32, None)
    assert (cflow.lr, cflow.batch_size, cflow.positions_per_step) == (2e-4, 8, 2048)
    given = for_kind(TrainSettings(lr=5e-4, batch_size=4, positions_per_step=100), KINDS["cflow"])
    assert (given.lr, given.batch_size, given.positions_per_step) == (5e-4, 4, 100)


def test_log_scales_are_soft_clamped():
    coupling = ConditionalCoupling(8, condition=4, hidden=6, clamp=1.5, permutation=torch.arange(8))
    with torch.no_grad():
        coupling.inner.weight.fill_(1.0)
        coupling.outer.weight.fill_(50.0)  # raw log-scales in the hundreds
        _, logdet = coupling(torch.ones(3, 8), coupling.condition_term(torch.ones(3, 4)))
    # 4 changed channels, each |scale| <= clamp (tanh saturates): |log det| <= 4 * 1.5, the affine's
    # log-scales being 0; unclamped it would be in the thousands
    assert 4 * 1.5 * 0.99 < float(logdet.abs().max()) <= 4 * 1.5


def test_each_coupling_has_its_own_fixed_permutation():
    decoder = CflowDecoder(16, (2, 2), steps=4, hidden=4, condition=4, clamp=2.0, seed=5)
    perms = [s.permutation.tolist() for s in decoder.steps]
    assert all(sorted(p) == list(range(16)) for p in perms)
    assert len({tuple(p) for p in perms}) == 4 and list(range(16)) not in perms
    again = CflowDecoder(16, (2, 2), steps=4, hidden=4, condition=4, clamp=2.0, seed=5)
    assert [s.permutation.tolist() for s in again.steps] == perms  # rebuilt the same from the config

"""The model kinds: one row per density model that can sit between the frozen backbone and
the anomaly head, selected by ``ModelConfig.model``.

Everything model-specific is here, behind one small interface, so that the pipeline around
it (fftrain.model's backbone, norms and head; the training loop's epochs, selection and
thresholds; ffexport's graph, metadata and precision paths; the runtime) does not care which
kind it runs. Per feature scale a kind provides a *decoder*:

* trained form: ``decoder(features [N, C, h, w]) -> (z [N, C, h, w], log|det J| [N, h, w])``,
  the maximum-likelihood transform of the normalized backbone features to a standard normal;
* shipped form (``shipped(decoder)``): the same function as the exported graph computes it,
  returning what the head reads;

and says whether its anomaly map counts the log-determinant (the head then reads z with it,
fftrain.head.ScaleLatent, instead of z alone),
how one training step's negative log-likelihood is taken (``training_nll``) and with which
defaults (learning rate, maps and feature vectors per step), and whether the feature norms in
front of it train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from . import cflow, flow
from .cflow_conv import ConvCflowDecoder
from .config import ModelConfig
from .fused_flow import FusedFlow2d

if TYPE_CHECKING:
    from .model import AnomalyModel


@dataclass(frozen=True)
class ModelKind:
    name: str
    title: str
    #: (config, feature channels, map (height, width), subnet hidden channels, seed) -> trained decoder.
    decoder: Callable[[ModelConfig, int, tuple[int, int], int, int], nn.Module]
    #: (config, feature channels) -> subnet hidden channels when the config does not record them.
    hidden_channels: Callable[[ModelConfig, int], int]
    #: trained decoder -> the module the exported graph runs (its output is what the head reads).
    shipped: Callable[[nn.Module], nn.Module]
    #: Whether the map is the full negative log-likelihood (the head reads z and log|det J|) or
    #: 0.5 * mean z^2 alone (the head reads z).
    map_counts_logdet: bool
    #: (model, backbone features of a batch of training maps, generator, positions per step) -> loss.
    training_nll: Callable[["AnomalyModel", list[torch.Tensor], torch.Generator, int], torch.Tensor]
    #: Whether the couplings read a positional encoding of ``ModelConfig.condition_channels``.
    position_conditioned: bool
    #: Whether the per-scale LayerNorms in front of the decoders have trained affine parameters.
    trainable_norms: bool
    #: Adam's learning rate in the kind's paper (fftrain's default for it).
    learning_rate: float
    #: Training maps per optimizer step (fftrain's default for the kind).
    maps_per_step: int
    #: Feature vectors drawn per scale per step (None: the kind reads every position).
    positions_per_step: int | None


def _whole_maps_nll(model: "AnomalyModel", features: list[torch.Tensor], _generator, _positions) -> torch.Tensor:
    """FastFlow's 3x3 couplings need each position's neighbours: every position of every map."""
    return model.nll_per_dim(*model.flow(features)).mean()


def _sampled_positions_nll(model: "AnomalyModel", features: list[torch.Tensor], generator: torch.Generator,
                           positions: int) -> torch.Tensor:
    """CFLOW-AD's step (its Section 5.1): ``positions`` feature vectors drawn from the batch's
    maps per scale; the mean negative log-likelihood per channel, averaged over scales."""
    total = 0.0
    for decoder, maps in zip(model.flows, model.normalize(features)):
        z, logdet = decoder.at_positions(*decoder.sample(maps, positions, generator))
        total = total + ((0.5 * (z * z).sum(dim=1) - logdet) / z.shape[1]).mean()
    return total / len(model.flows)


KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind(
            name="fastflow", title="FastFlow (Yu et al. 2021)",
            decoder=lambda cfg, channels, _size, hidden, seed: flow.Flow2d(
                channels, cfg.flow_steps, hidden, cfg.conv3x3_only, cfg.clamp, seed=seed),
            hidden_channels=lambda cfg, channels: flow.subnet_hidden_channels(channels, cfg.hidden_ratio),
            shipped=FusedFlow2d,
            # FastFlow's paper leaves the Jacobian out of the anomaly map.
            map_counts_logdet=False, position_conditioned=False, trainable_norms=True,
            training_nll=_whole_maps_nll, learning_rate=1e-3, maps_per_step=32, positions_per_step=None,
        ),
        ModelKind(
            name="cflow", title="CFLOW-AD (Gudovskiy et al. 2022)",
            decoder=lambda cfg, channels, size, hidden, seed: cflow.CflowDecoder(
                channels, size, cfg.flow_steps, hidden, cfg.condition_channels, cfg.clamp, seed=seed),
            hidden_channels=lambda cfg, channels: cflow.subnet_hidden_channels(
                channels, cfg.condition_channels, cfg.hidden_ratio),
            shipped=ConvCflowDecoder,
            # Fixed (non-affine) norms: a trained per-position affine would learn the position
            # dependence the condition is there to model, and training would have to push whole
            # maps through it for every step of sampled vectors.
            map_counts_logdet=True, position_conditioned=True, trainable_norms=False,
            # The paper draws 8192 vectors from 32 maps per step; a quarter of both (the same
            # vectors per map) gives four times the optimizer steps for the same compute, which
            # the few epochs a CPU affords need (docs/cflow.md, benchmarks/README.md).
            training_nll=_sampled_positions_nll, learning_rate=2e-4, maps_per_step=8, positions_per_step=2048,
        ),
    )
}

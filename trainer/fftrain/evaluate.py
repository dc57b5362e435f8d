"""A trained model's outputs on cached backbone features: what epoch selection, the memory
bank's fit, the thresholds and the folds all score with."""

from __future__ import annotations

import torch

from .model import AnomalyModel


@torch.no_grad()
def evaluate_features(model: AnomalyModel, feats: list[torch.Tensor], batch_size: int = 32, with_bank: bool = True):
    """(nll_per_dim [N], anomaly_map [N,1,S,S], score [N]) from cached features; ``with_bank``
    False: the flows' map and score alone, without a memory bank the model may have."""
    model.eval()
    nlls, maps, scores = [], [], []
    for start in range(0, len(feats[0]), batch_size):
        batch = [f[start : start + batch_size] for f in feats]
        zs, logdets = model.flow(batch)
        nlls.append(model.nll_per_dim(zs, logdets))
        m, s = model.head(model.head_inputs(zs, logdets))
        if with_bank:
            m, s = model.with_bank(m, s, batch)
        maps.append(m)
        scores.append(s)
    return torch.cat(nlls), torch.cat(maps), torch.cat(scores)

"""Fitting the memory bank beside trained flows (fftrain.memory_bank holds the bank and the
choices): after the best epoch and the map standardization, before the thresholds."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .evaluate import evaluate_features
from .memory_bank import BANK_STRIDE, MAP_MARGIN, MemoryBankScore, choose_map_weight, choose_weight, coreset_vectors
from .model import AnomalyModel


def new_bank(model: AnomalyModel, train_feats: list[torch.Tensor], n_train: int) -> MemoryBankScore:
    """A bank of the first ``n_train`` training images' stride-16 patches (their coreset), with no
    weight yet: in neither the score nor the map."""
    index = model.strides.index(BANK_STRIDE)
    vectors = coreset_vectors(train_feats[index][:n_train], seed=model.config.seed)
    bank = MemoryBankScore(vectors.shape[1], len(vectors), index, model.feature_shapes[index][1:])
    bank.set_vectors(vectors)
    return bank


@torch.no_grad()
def bank_nearest(bank: MemoryBankScore, feats: list[torch.Tensor], batch_size: int = 32) -> torch.Tensor:
    """[N, h*w]: each stride-16 patch's distance to its nearest bank vector."""
    return torch.cat([bank.nearest([f[i : i + batch_size] for f in feats]) for i in range(0, len(feats[0]), batch_size)])


def fit_memory_bank(model: AnomalyModel, train_feats: list[torch.Tensor], n_train: int, val_feats: list[torch.Tensor],
                    defects: tuple[list[torch.Tensor], np.ndarray], log: Callable[[str], None], choose: bool = True) -> None:
    """Add the memory bank beside the trained flows where it helps (fftrain.memory_bank), from
    the training images' features (not their re-exposed views): in the score by the synthetic
    defects' image AUROC, in the map by their pixel AUROC (``defects``: their features and
    masks [N, H, W]). ``choose`` False (a re-fit of a trained model on another backbone's
    features): the model keeps the decisions it was trained with, its bank re-fitted at the
    weights it has, or none."""
    config = model.config
    refit = model.bank is not None
    if not refit and (config.memory_bank == "off" or not choose):
        return
    defect_feats, defect_masks = defects
    bank = new_bank(model, train_feats, n_train)
    flows = {k: evaluate_features(model, f, with_bank=False) for k, f in (("val", val_feats), ("synthetic", defect_feats))}
    scores = {k: v[2].numpy().astype(np.float64) for k, v in flows.items()}
    nearest = {k: bank_nearest(bank, f) for k, f in (("val", val_feats), ("synthetic", defect_feats))}
    distances = {k: v.amax(1).numpy().astype(np.float64) for k, v in nearest.items()}
    size = model.head.image_size
    dist_maps = {k: distance_maps(bank, v, size) for k, v in nearest.items()}  # (quarter maps, mean, std)
    spread = (scores["val"].std(), distances["val"].std())
    pixel_spread = dist_maps["val"][2]
    if not all(np.isfinite(spread)) or min(spread) <= 0 or not pixel_spread > 0:
        log("memory bank: none (the validation normals' scores do not spread; there is nothing to weigh it by)")
        weight = map_weight = 0.0
    elif refit:
        weight, map_weight = config.memory_bank_weight, config.memory_bank_map_weight
    else:
        weight, tried = choose_weight(scores, distances, config.memory_bank)
        log("memory bank: validation AUROC on synthetic defects by weight "
            + ", ".join(f"{w:g}: {a:.4f}" for w, a in tried.items())
            + (f"; kept at weight {weight:g}" if weight else "; not kept in the score (the flows alone separate best)"))
        quarter = [np.concatenate([quarter_map(flows["val"][1]), quarter_map(flows["synthetic"][1])]),
                   np.concatenate([dist_maps["val"][0], dist_maps["synthetic"][0]])]
        masks = quarter_map(torch.from_numpy(defect_masks.astype(np.float32))[:, None]) >= 0.25
        map_weight, tried = choose_map_weight(*quarter, masks, len(val_feats[0]), config.memory_bank)
        log("memory bank: validation pixel AUROC on synthetic defects by map weight "
            + ", ".join(f"{w:g}: {a:.4f}" for w, a in tried.items())
            + (f"; kept at weight {map_weight:g}" if map_weight else
               f"; not kept in the map (no weight localizes them better than the flows' map alone by {MAP_MARGIN:g} or more)"))
    if weight:
        bank.gain.fill_(weight * spread[0] / spread[1])
    if map_weight:
        bank.add_map(map_weight / pixel_spread, dist_maps["val"][1], size)
    if weight or map_weight:
        log(f"memory bank: {len(bank.bank)} stride-{BANK_STRIDE} patches of {n_train} training images, weight "
            f"{weight:g} in the score, {map_weight:g} in the map")
    kept = bool(weight or map_weight)
    model.bank = bank if kept else None
    model.config = config.model_copy(update={"memory_bank_vectors": len(bank.bank) if kept else 0,
                                             "memory_bank_weight": weight, "memory_bank_map_weight": map_weight})


def distance_maps(bank: MemoryBankScore, nearest: torch.Tensor, size: tuple[int, int],
                  batch_size: int = 32) -> tuple[np.ndarray, float, float]:
    """(the quarter-resolution distance maps [N, h/4, w/4], the mean and the spread of the
    full-resolution maps' pixels) of per-patch distances ``nearest`` [N, h*w], a batch at a time."""
    quarters, total, total_sq, count = [], 0.0, 0.0, 0
    for i in range(0, len(nearest), batch_size):
        full = bank.distance_map(nearest[i : i + batch_size], size).double()
        total, total_sq, count = total + float(full.sum()), total_sq + float((full * full).sum()), count + full.numel()
        quarters.append(quarter_map(full))
    mean = total / count
    return np.concatenate(quarters), mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


def quarter_map(maps: torch.Tensor) -> np.ndarray:
    """[N, h/4, w/4] float32 of maps [N, 1, h, w]: each 4x4 cell's mean (pixel AUROC at the
    accuracy suite's resolution, a sixteenth of the pixels to rank)."""
    return F.avg_pool2d(maps.float(), 4, ceil_mode=True)[:, 0].numpy()

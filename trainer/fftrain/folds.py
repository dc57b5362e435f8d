"""Thresholds from every training normal: each one scored by a model that did not train on it.

With ``TrainSettings.threshold_folds = K`` the training images are dealt into K folds by
index (image i in fold i mod K). For each fold, a copy of the model starts from the same
initial weights as the shipped one and is trained like it on the other folds (their images
and their augmented views, never a view of a held-out image), for the epochs the shipped
model kept and on the shipped model's learning-rate schedule; its map standardization is
fitted on its own training pool (and its memory bank, if the model has one, on its training
images), and it scores the fold's held-out images. Those scores join
the validation normals' (scored by the shipped model) in ``ffcore.operating_point``, so a
line with 300 good parts calibrates on about 300 scores instead of the 30 held out for
validation: the difference between a tail model's guess and an order statistic that holds
(benchmarks/README.md, "Thresholds on few normals").

What it assumes: a model trained on (K - 1)/K of the images scores new normals like the
shipped model. It has seen fewer images, so its scores of new normals are, if anything,
slightly higher: the threshold errs towards fewer false rejects. More folds make the fold
models closer to the shipped one and cost more: about K - 1 extra trainings of the decoders
(the backbone features are computed once and reused).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .memory_bank import coreset_vectors
from .model import AnomalyModel
from .train import TrainSettings, evaluate_features, map_peaks, optimizer_for, raw_scale_maps, run_epoch


def fold_indices(n_train: int, n_pool: int, folds: int, fold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(held-out training images, the pool the fold's model trains on). The pool is
    ``n_pool`` cached items: the ``n_train`` images, then their augmented views in blocks of
    ``n_train`` (item j shows image j mod n_train); every item of a held-out image is left out."""
    items = torch.arange(n_pool)
    held = torch.arange(n_train)[torch.arange(n_train) % folds == fold]
    return held, items[(items % n_train) % folds != fold]


@dataclass
class OutOfFold:
    """Every training image's score and map peak (training-image order), each from the fold
    model that did not train on it; per fold, how many cached items trained it, its mean
    training loss per epoch and the size of its memory bank (0: the model has none)."""

    scores: np.ndarray
    peaks: np.ndarray
    trained_items: list[int] = field(default_factory=list)
    epoch_losses: list[list[float]] = field(default_factory=list)
    bank_vectors: list[int] = field(default_factory=list)


def out_of_fold_scores(model: AnomalyModel, start_state: dict[str, Any], train_feats: list[torch.Tensor],
                       n_train: int, settings: TrainSettings, epochs: int,
                       log: Callable[[str], None] = print) -> OutOfFold:
    folds = settings.threshold_folds
    out = OutOfFold(np.empty(n_train), np.empty(n_train))
    for fold in range(folds):
        t0 = time.perf_counter()
        held, pool = fold_indices(n_train, len(train_feats[0]), folds, fold)
        n_fold = n_train - len(held)
        fold_model = copy.deepcopy(model)
        # The memory bank is not a trained weight: the fold model gets its own below.
        missing, unexpected = fold_model.load_state_dict(
            {k: v for k, v in start_state.items() if not k.startswith("bank.")}, strict=False)
        if unexpected or any(not k.startswith("bank.") for k in missing):
            raise RuntimeError(f"fold model state: missing {missing}, unexpected {unexpected}")
        # The shipped model's schedule: the same number of steps per epoch for its share of images.
        steps = math.ceil(n_fold / settings.batch_size)
        optim = optimizer_for(fold_model, settings, steps)
        generator = torch.Generator().manual_seed(fold_model.config.seed + 3000 + fold)
        losses = []
        for _ in range(epochs):
            fold_model.train()
            order = pool[torch.randperm(len(pool), generator=generator)[:n_fold]]
            losses.append(float(np.mean(run_epoch(fold_model, train_feats, order, settings, optim, generator, range(steps)))))
        fold_model.eval()
        if fold_model.config.map_normalization != "none":
            fold_model.head.fit_normalization(raw_scale_maps(fold_model, train_feats, index=pool))
        if fold_model.bank is not None:  # its own bank, of the fold's training images, at the shipped gain
            fold_model.bank.set_vectors(coreset_vectors(train_feats[fold_model.bank.scale_index][pool[pool < n_train]],
                                                        seed=fold_model.config.seed))
        _, maps, fold_scores = evaluate_features(fold_model, [f[held] for f in train_feats])
        out.scores[held.numpy()] = fold_scores.numpy()
        out.peaks[held.numpy()] = map_peaks(maps)
        out.trained_items.append(len(pool))
        out.epoch_losses.append(losses)
        out.bank_vectors.append(0 if fold_model.bank is None else len(fold_model.bank.bank))
        log(f"threshold fold {fold + 1}/{folds}: trained on {n_fold} images for {epochs} epochs (NLL/dim "
            f"{losses[0]:.3f} -> {losses[-1]:.3f}), scored {len(held)} held-out training images in "
            f"{time.perf_counter() - t0:.1f} s")
    return out

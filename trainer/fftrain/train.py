"""The training loop: cache frozen-backbone features once, fit the decoders, keep the best epoch.

The loop is the same for every model kind (fftrain.kinds); a kind decides only how one
step's negative log-likelihood is taken from the batch's maps (FastFlow: every position;
CFLOW-AD: ``positions_per_step`` feature vectors drawn from them) and the step settings a
``TrainSettings`` leaves open (learning rate, maps and vectors per step).

Why features are cached: the backbone is frozen, so its output for an image never
changes; computing it once makes an epoch cost only the LayerNorms and flows. With
augmentation (``augment_views``), that many re-exposed views of every training image
(fftrain.augment) are drawn once and cached beside the originals; each epoch then samples
as many items as there are training images from that pool, so an epoch costs the same
with or without augmentation.

Why the best epoch is chosen on held-out data: the training NLL of a FastFlow with
trainable LayerNorms can fall for dozens of epochs while detection quality peaks early
and then degrades. Each epoch is scored on validation normals (NLL: how well the flow
models unseen good parts) and on the same normals with HARD synthetic defects drawn in at
several strengths (faint cracks, small spots, large uneven areas, texture patches, edge
chips: fftrain.synthetic; image AUROC, "synthetic" in every report). Easy drawn defects
saturate that AUROC near 1 and cannot rank epochs; hard ones do. The kept epoch has the
lowest validation NLL among the epochs whose synthetic AUROC is within ``AUROC_SLACK`` of
the best one.

After the best epoch is restored, the head's map standardization (if the config asks for
one) is fitted on the training pool's maps, then the memory bank beside the flows where the
same synthetic check says it helps (``fit_memory_bank``, fftrain.memory_bank), and only then
are the thresholds calibrated on the validation normals: they are in the units of the map
and the score that ship.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
from ffcore import synthetic
from ffcore.memory import GIB, require
from ffcore.metrics import score_statistics
from ffcore.operating_point import OperatingPoint, operating_point
from ffcore.progress import progress as progress_bar  # `progress` is a parameter name here

from . import augment, checkpoint
from .config import ModelConfig
from .data import DataSplit, is_monochrome, load_batch, to_tensor_batch
from .kinds import ModelKind
from .bank_fit import fit_memory_bank
from .evaluate import evaluate_features
from .memory_bank import separation
from .model import AnomalyModel

AUROC_SLACK = 0.01


@dataclass
class TrainSettings:
    # 24: the flows' validation NLL still falls at 12 on every visible set, and 24 gained image
    # AUROC on each of them (benchmarks/README.md, "Twice the epochs"), at 1.7x the training time.
    epochs: int = 24
    # None: the model kind's choice (fftrain.kinds), resolved when training starts.
    batch_size: int | None = None  # training maps per optimizer step
    lr: float | None = None  # Adam's learning rate
    positions_per_step: int | None = None  # cflow: feature vectors drawn per scale per step
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    target_frr: float = 0.02
    augment_views: int = 4  # re-exposed views per training image, cached with the originals
    # Share of those views that also pass through a JPEG round trip. Off by default: it makes
    # the model accept local loss of fine detail (blur-like defects) as normal.
    augment_jpeg: float = 0.0
    # Thresholds from every training normal (fftrain.folds): 0 = from the validation normals
    # only; K >= 2 = also each training normal, scored by one of K models trained on the
    # other folds (about K - 1 extra trainings of the decoders; the backbone features are reused).
    threshold_folds: int = 0
    threads: int | None = None
    progress: bool = True
    keep_features: bool = False
    # Memory training may use, in GiB (None: what the machine has available when it starts).
    # Training refuses at once when its feature cache would not fit (cache_bytes).
    memory_budget_gib: float | None = None

    def __post_init__(self) -> None:
        # Checked here, not deep in the loop: epochs=0 would otherwise end in a model with
        # no selected epoch, and a zero batch size in a division.
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be at least 1 (got {self.epochs!r}): training picks the best epoch among them")
        for name in ("batch_size", "positions_per_step"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1 (got {value!r})")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number (got {self.lr!r})")
        if not (0.0 <= self.augment_jpeg <= 1.0):
            raise ValueError(f"augment_jpeg is a share of the augmented views, in [0, 1] (got {self.augment_jpeg!r})")
        if isinstance(self.threshold_folds, bool) or not isinstance(self.threshold_folds, int) or \
                self.threshold_folds < 0 or self.threshold_folds == 1:
            raise ValueError(f"threshold folds must be 0 (thresholds from the validation normals) or at least 2 "
                             f"(got {self.threshold_folds!r})")
        if self.memory_budget_gib is not None and not (self.memory_budget_gib > 0 and math.isfinite(self.memory_budget_gib)):
            raise ValueError(f"memory budget must be a positive number of GiB (got {self.memory_budget_gib!r})")
        if not (0.0 < self.target_frr < 1.0):
            # 0 cannot be promised on new normals: no finite threshold has a zero rate.
            raise ValueError(f"target false-reject rate must be in (0, 1) (got {self.target_frr!r})")


def for_kind(settings: TrainSettings, kind: ModelKind) -> TrainSettings:
    """``settings`` with what it leaves open (None) set to the model kind's step settings."""
    def given(value, default):
        return default if value is None else value

    return replace(settings, lr=given(settings.lr, kind.learning_rate),
                   batch_size=given(settings.batch_size, kind.maps_per_step),
                   positions_per_step=given(settings.positions_per_step, kind.positions_per_step))


@dataclass
class EpochRecord:
    epoch: int
    train_nll: float
    val_nll: float
    val_synthetic_auroc: float | None
    seconds: float


@dataclass
class TrainResult:
    model: AnomalyModel
    best_epoch: int
    history: list[EpochRecord]
    calibration: dict[str, Any]
    settings: TrainSettings  # as training ran them (the kind's defaults filled in)
    timings: dict[str, float] = field(default_factory=dict)
    # The cached training-pool and validation features, when TrainSettings.keep_features
    # asks for them (tools that compare head variants without re-extracting).
    features: dict[str, list[torch.Tensor]] | None = None
    # Share of the validation normals' drawn defects the stored image threshold rejects, overall,
    # per kind and per contrast (ffcore.synthetic.caught_by_kind).
    synthetic_caught: dict[str, Any] | None = None


def pooling_hint(caught: dict[str, Any], feature_pooling: int) -> str | None:
    """A note when the threshold passes most drawn large soft unevenness and the features are
    not pooled: the one kind for which a measured lever exists (benchmarks/README.md: pooling
    raised it from 0.81 to 0.95 AUROC on the synthetic strip, and cost each real set 0.003-0.04,
    so it is not the default). None otherwise."""
    uneven = caught["by_kind"].get("uneven")
    if uneven is None or uneven >= 0.5 or feature_pooling > 1:
        return None
    return (f"only {uneven:.0%} of the drawn large soft unevenness is rejected. If this part's defects include "
            "broad, faint brightness changes, train with --feature-pooling 3 as well and compare the two on real "
            "examples (ffeval --data): on the development sets it separated that kind far better, and each of "
            "the three real image sets a little worse")


def improves(record: EpochRecord, best: EpochRecord | None, history: list[EpochRecord]) -> bool:
    """Does ``record`` (already in ``history``) replace ``best``? Eligible epochs have a
    synthetic AUROC within AUROC_SLACK of the best so far; among them the lower validation
    NLL wins. A kept epoch that falls out of the eligible band is replaced."""
    top = max(r.val_synthetic_auroc for r in history)
    if record.val_synthetic_auroc < top - AUROC_SLACK:
        return False
    return best is None or best.val_synthetic_auroc < top - AUROC_SLACK or record.val_nll < best.val_nll


@torch.no_grad()
def extract_features(model: AnomalyModel, images: np.ndarray, batch_size: int = 16, desc: str = "", progress: bool = True):
    """Backbone features of uint8 NHWC images, as one tensor per scale."""
    chunks: list[list[torch.Tensor]] = []
    for start in progress_bar(range(0, len(images), batch_size), desc=desc, unit="batch", enabled=progress):
        chunks.append(model.extract(to_tensor_batch(images[start : start + batch_size])))
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]


@torch.no_grad()
def raw_scale_maps(model: AnomalyModel, feats: list[torch.Tensor], batch_size: int = 32,
                   index: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Plain (unstandardized) per-scale maps [N, 1, h, w] of cached features (of the items
    ``index`` names, without copying the features, when given)."""
    model.eval()
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(feats[0]) if index is None else len(index), batch_size):
        rows = slice(start, start + batch_size) if index is None else index[start : start + batch_size]
        inputs = model.head_inputs(*model.flow([f[rows] for f in feats]))
        chunks.append([model.head.scale_map(x) for x in inputs])
    return [torch.cat([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def calibrate(normal_maps: torch.Tensor, normal_scores: torch.Tensor, target_frr: float) -> dict[str, Any]:
    """Default thresholds from validation normals (``ffcore.operating_point``).

    Image: the score threshold whose false-reject rate on new normals is ``target_frr``.
    Pixel: the same rule applied to each normal image's largest map value, so a normal part
    shows an empty defect mask unless it is (wrongly) rejected, in the same proportion. Each
    comes with the interval of its rate and, when the normals are too few for an order
    statistic, how many more are needed (``image_estimate``, ``pixel_estimate``).
    """
    scores = normal_scores.numpy().astype(np.float64)
    return calibrate_scores(scores, map_peaks(normal_maps), target_frr, f"validation normals (n={len(scores)})")


def map_peaks(maps: torch.Tensor) -> np.ndarray:
    """Each map's largest value (what the pixel threshold is calibrated on)."""
    return maps.flatten(1).amax(1).numpy().astype(np.float64)


def calibrate_scores(scores: np.ndarray, peaks: np.ndarray, target_frr: float, normals: str) -> dict[str, Any]:
    """:func:`calibrate` of normal images' scores and map peaks; ``normals`` says which images."""
    image, pixel = operating_point(scores, target_frr), operating_point(peaks, target_frr)
    return {
        "image_threshold": image.threshold,
        "pixel_threshold": pixel.threshold,
        "target_frr": target_frr,
        "source": f"{normals}, target false-reject rate {target_frr:g} ({image.method.value.replace('_', ' ')})",
        "image_estimate": image.to_dict(),
        "pixel_estimate": pixel.to_dict(),
        "score_stats": score_statistics(scores),
    }


def optimizer_for(model: AnomalyModel, settings: TrainSettings, steps_per_epoch: int):
    """(Adam, its cosine schedule over every step of ``settings.epochs``): the late epochs
    refine instead of bouncing around the optimum."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)


def run_epoch(model: AnomalyModel, feats: list[torch.Tensor], order: torch.Tensor, settings: TrainSettings,
              optim, generator: torch.Generator, steps) -> list[float]:
    """One pass of optimizer steps over the cached features in ``order`` (``steps``: the
    step range, or its progress bar); the step losses."""
    optimizer, scheduler = optim
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses = []
    for step in steps:
        idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
        loss = model.training_nll([f[idx] for f in feats], generator, settings.positions_per_step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if hasattr(steps, "set_postfix"):
            steps.set_postfix(nll=f"{losses[-1]:.4f}")
    return losses


def training_views(images: np.ndarray, settings: TrainSettings, seed: int) -> np.ndarray:
    """The re-exposed views train() caches after the training images (``settings.augment_views``
    per image, in blocks of one view of every image): fftrain.folds and the accuracy suite
    rebuild a finished model's training pool from them."""
    return augment.augmented_views(images, settings.augment_views, seed=seed + 2000,
                                   r=augment.PhotometricRange(jpeg_probability=settings.augment_jpeg))


def cache_bytes(model: AnomalyModel, n_train: int, n_val: int, augment_views: int) -> int:
    """Estimated peak bytes of what train() holds: the uint8 input images of the training pool
    (each training image and its ``augment_views`` re-exposed views), of the validation normals
    and of their synthetic defects, beside their float32 backbone features; the pool's
    features count twice, since its per-batch chunks and their concatenation coexist."""
    h, w = model.config.image_size
    image = h * w * 3
    feature = 4 * sum(c * fh * fw for c, fh, fw in model.feature_shapes)
    pool = n_train * (1 + augment_views)
    held_out = n_val * (1 + len(synthetic.HARD_STRENGTHS))
    return (pool + held_out) * (image + feature) + pool * feature


def require_cache_memory(model: AnomalyModel, split: DataSplit, settings: TrainSettings) -> None:
    """Refuse before any image is read when the caches would not fit (ffcore.memory)."""
    n_train, views = len(split.train), settings.augment_views
    per_view = cache_bytes(model, n_train, 0, 1) - cache_bytes(model, n_train, 0, 0)
    h, w = model.config.image_size
    require(
        cache_bytes(model, n_train, len(split.val), views),
        f"training on {n_train} images at {h}x{w} with {views} re-exposed views each",
        f"Train with fewer re-exposed views (--augment-views, {views} now: each adds about {per_view / GIB:.1f} GiB), "
        "a smaller --image-size or fewer training images, on a machine with more memory, or give --memory-budget "
        "(GiB) to set the limit yourself.",
        None if settings.memory_budget_gib is None else int(settings.memory_budget_gib * GIB),
    )


FeatureExtractor = Callable[[np.ndarray, str], list[torch.Tensor]]


def train(
    config: ModelConfig,
    split: DataSplit,
    settings: TrainSettings,
    backbone_weights: str | None = None,
    log: Callable[[str], None] = print,
    *,
    model: AnomalyModel | None = None,
    extract: FeatureExtractor | None = None,
) -> TrainResult:
    """Fit the decoders on the backbone features of ``split``'s normals.

    model:   start from this model's decoders (warm start) instead of a fresh model.
    extract: features of uint8 NHWC images (images, description) -> one tensor per scale,
             instead of the model's own PyTorch backbone. ffexport passes the INT8 backbone
             (ONNX Runtime) here, so the flows learn the features the INT8 file computes.
    """
    if settings.epochs < 1:
        raise ValueError(f"epochs must be at least 1 (got {settings.epochs})")
    if settings.augment_views < 0:
        raise ValueError(f"augment_views must be >= 0 (got {settings.augment_views})")
    if not split.train or not split.val:
        raise ValueError(
            f"{split.name}: {len(split.train)} training and {len(split.val)} validation normal images; training needs "
            "at least one of each (validation images select the best epoch and set the thresholds)"
        )
    if settings.threshold_folds > len(split.train):
        raise ValueError(f"{split.name}: {settings.threshold_folds} threshold folds of {len(split.train)} training images; "
                         f"use at most {len(split.train)} folds (or 0: thresholds from the validation normals only)")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(config.seed)
    timings: dict[str, float] = {}
    warm_start = model is not None
    model = model if model is not None else AnomalyModel(config, backbone_weights)
    settings = for_kind(settings, model.kind)
    require_cache_memory(model, split, settings)
    if extract is None:
        def extract(images: np.ndarray, desc: str) -> list[torch.Tensor]:
            return extract_features(model, images, desc=desc, progress=settings.progress)
    size, mode = config.image_size, config.resize_mode

    t0 = time.perf_counter()
    train_images = load_batch(split.train, size, mode)
    val_images = load_batch(split.val, size, mode)
    if model.config.input_color is None:
        color = "luma" if is_monochrome(train_images) else "rgb"
        model.config = model.config.model_copy(update={"input_color": color})
        log("input colour: luma (every training image is grey; colour noise in frames will be ignored)"
            if color == "luma" else "input colour: rgb (the training images are in colour)")
    val_defects, val_defect_masks, _ = synthetic.hard_defect_batch(val_images, seed=config.seed + 1000)
    defect_plan = synthetic.hard_defect_plan(len(val_images))
    if settings.augment_views:
        train_images = np.concatenate([train_images, training_views(train_images, settings, config.seed)])
    train_feats = extract(train_images, "features (train)")
    val_feats = extract(val_images, "features (val)")
    val_defect_feats = extract(val_defects, "features (val, synthetic)")
    timings["feature_cache_s"] = time.perf_counter() - t0
    n_train = len(split.train)
    log(
        f"cached backbone features of {n_train} train images"
        f"{f' (+{len(train_images) - n_train} augmented views)' if settings.augment_views else ''} and "
        f"{len(val_images)} validation images in {timings['feature_cache_s']:.1f} s"
    )

    start_state = copy.deepcopy(model.state_dict()) if settings.threshold_folds else None
    steps_per_epoch = math.ceil(n_train / settings.batch_size)
    optimizer, scheduler = optimizer_for(model, settings, steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)

    history: list[EpochRecord] = []
    best: EpochRecord | None = None
    best_state = None
    t_train = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        t_epoch = time.perf_counter()
        model.train()
        # With augmentation the pool is larger than an epoch: each epoch draws a fresh subset.
        order = torch.randperm(len(train_images), generator=generator)[:n_train]
        # summary=False: off a terminal, the epoch line logged below is the one line per epoch.
        bar = progress_bar(range(steps_per_epoch), desc=f"epoch {epoch}/{settings.epochs}", unit="step",
                           enabled=settings.progress, summary=False)
        losses = run_epoch(model, train_feats, order, settings, (optimizer, scheduler), generator, bar)
        # The flows alone pick the epoch: a memory bank is fitted on the kept one.
        val_nll, _, val_scores = evaluate_features(model, val_feats, with_bank=False)
        _, _, defect_scores = evaluate_features(model, val_defect_feats, with_bank=False)
        auroc = separation(val_scores.numpy(), defect_scores.numpy())
        record = EpochRecord(epoch, float(np.mean(losses)), float(val_nll.mean()), auroc, time.perf_counter() - t_epoch)
        history.append(record)
        marker = ""
        if improves(record, best, history):
            best, marker = record, "  *best"
            best_state = copy.deepcopy(model.state_dict())
        log(
            f"epoch {epoch:3d}  train NLL/dim {record.train_nll:8.4f}  val NLL/dim {record.val_nll:8.4f}  "
            f"val AUROC (synthetic defects) {auroc:.4f}  {record.seconds:5.1f} s{marker}"
        )
    timings["train_s"] = time.perf_counter() - t_train

    model.load_state_dict(best_state)
    model.eval()
    if config.map_normalization != "none":
        model.head.fit_normalization(raw_scale_maps(model, train_feats))
        log(f"fitted the map standardization ({config.map_normalization}) on {len(train_images)} training maps")
    fit_memory_bank(model, train_feats, n_train, val_feats, (val_defect_feats, val_defect_masks), log,
                    choose=not warm_start)
    _, val_maps, val_scores = evaluate_features(model, val_feats)
    if settings.threshold_folds:
        from .folds import out_of_fold_scores

        t_folds = time.perf_counter()
        held_out = out_of_fold_scores(model, start_state, train_feats, n_train, settings, best.epoch, log)
        timings["threshold_folds_s"] = time.perf_counter() - t_folds
        calibration = calibrate_scores(
            np.r_[val_scores.numpy().astype(np.float64), held_out.scores], np.r_[map_peaks(val_maps), held_out.peaks],
            settings.target_frr, f"validation normals (n={len(val_scores)}) and training normals scored out of fold "
            f"(n={n_train}, {settings.threshold_folds} folds)")
    else:
        calibration = calibrate(val_maps, val_scores, settings.target_frr)
    log(
        f"best epoch {best.epoch}; image threshold {calibration['image_threshold']:.4f}, "
        f"pixel threshold {calibration['pixel_threshold']:.4f} ({calibration['source']})"
    )
    for which in ("image", "pixel"):
        log(f"{which} {OperatingPoint.from_dict(calibration[f'{which}_estimate']).summary()}")
    # What the stored decision does to the check's drawn defects, per kind: a line engineer sees
    # which kinds this model passes before any part does.
    caught = synthetic.caught_by_kind(evaluate_features(model, val_defect_feats)[2].numpy(),
                                      calibration["image_threshold"], defect_plan)
    log(synthetic.caught_summary(caught))
    if (hint := pooling_hint(caught, config.feature_pooling)) is not None:
        log(f"note: {hint}")
    if not settings.threshold_folds and calibration["image_estimate"].get("needed_more"):
        log(f"the {n_train} training images can count as well: fftrain --threshold-folds 5 scores each with a model "
            "that did not train on it (about 4 more trainings of the flows)")
    features = {"train": train_feats, "val": val_feats} if settings.keep_features else None
    return TrainResult(model, best.epoch, history, calibration, settings, timings, features, caught)


def train_info(result: TrainResult, split: DataSplit) -> dict[str, Any]:
    """What goes into the checkpoint about how the model was made (plain types only)."""
    settings = result.settings
    return {
        "data": split.name,
        "counts": split.counts(),
        "data_notes": list(split.notes),
        "settings": {k: v for k, v in vars(settings).items() if k != "progress"},
        "best_epoch": result.best_epoch,
        "history": [vars(r) for r in result.history],
        "timings": result.timings,
        "torch_version": str(torch.__version__),
        "model_selection": f"lowest validation NLL among epochs within {AUROC_SLACK} of the best validation "
        "image AUROC on hard synthetic defects (several kinds and strengths) drawn onto held-out normals",
        # Real images the exporter checks parity on (paths on the training machine).
        "parity_images": [str(s.path) for s in split.val[:8]],
        "synthetic_caught": result.synthetic_caught,
    }


def train_and_save(config, split, settings, out, backbone_weights=None, log=print) -> TrainResult:
    result = train(config, split, settings, backbone_weights, log)
    checkpoint.save(out, result.model, result.calibration, train_info(result, split))
    log(f"wrote {out}")
    return result

"""Thresholds from every training normal (fftrain.folds): each scored by a model that never
trained on it, on real ELPV cells and the real backbone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ffcore import synthetic
from ffcore.data import DataSplit, load_batch

from fftrain.cli import main as fftrain_main
from fftrain.config import ModelConfig
from fftrain.folds import fold_indices, out_of_fold_scores
from fftrain.model import AnomalyModel
from fftrain.train import TrainSettings, extract_features, for_kind, train

TINY = ModelConfig(image_size=64, flow_steps=2, hidden_ratio=1.0)


def test_fold_indices_hold_each_image_out_once_with_all_of_its_views():
    # 10 images and 4 augmented views of each: item j shows image j % 10.
    held = [fold_indices(10, 50, 3, f)[0].tolist() for f in range(3)]
    assert held == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    pool = fold_indices(10, 50, 3, 1)[1].tolist()
    assert len(pool) == 50 - 5 * 3
    assert not {j % 10 for j in pool} & {1, 4, 7}  # no view of a held-out image trains its fold's model
    assert {j % 10 for j in pool} == {0, 2, 3, 5, 6, 8, 9}


def test_each_training_image_is_scored_by_the_fold_model_that_held_it_out(elpv_split):
    """A cracked cell among the training images: the fold model that never saw it scores it
    above every other training image, and its score lands at its own index."""
    images = load_batch(elpv_split.train[:24], 64)
    cracked, _ = synthetic.add_defect(images[5], np.random.default_rng(3), "crack")
    images[5] = cracked
    torch.manual_seed(0)
    model = AnomalyModel(TINY)
    feats = extract_features(model, images, progress=False)
    start = copy.deepcopy(model.state_dict())
    settings = for_kind(TrainSettings(epochs=3, batch_size=8, threshold_folds=3, progress=False), model.kind)
    lines = []
    held_out = out_of_fold_scores(model, start, feats, len(images), settings, 3, lines.append)
    scores, peaks = held_out.scores, held_out.peaks
    assert scores.shape == peaks.shape == (24,) and np.isfinite(scores).all()
    assert int(np.argmax(scores)) == 5 and int(np.argmax(peaks)) == 5
    # Each fold model trained on the other two folds only, and its likelihood rose as it trained.
    assert held_out.trained_items == [16, 16, 16]
    for losses in held_out.epoch_losses:
        assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
    assert len(lines) == 3 and "trained on 16 images for 3 epochs" in lines[0]
    # The shipped model's weights are untouched by the fold models' training.
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_thresholds_use_validation_and_out_of_fold_training_normals(elpv_split):
    split = DataSplit("elpv:mono (24)", elpv_split.train[:24], elpv_split.val[:8], [])
    plain_log, folded_log = [], []
    plain = train(TINY, split, TrainSettings(epochs=2, batch_size=16, progress=False), log=plain_log.append)
    folded = train(TINY, split, TrainSettings(epochs=2, batch_size=16, threshold_folds=3, progress=False),
                   log=folded_log.append)
    # 8 validation normals are too few for the target: the output names the way to use all 24 images.
    assert any("24 training images can count" in line and "--threshold-folds" in line for line in plain_log)
    assert not any("--threshold-folds" in line for line in folded_log)
    assert plain.calibration["image_estimate"]["n"] == 8
    for which in ("image_estimate", "pixel_estimate"):
        assert folded.calibration[which]["n"] == 8 + 24
    assert "training normals scored out of fold (n=24, 3 folds)" in folded.calibration["source"]
    # Same seed, same training: the shipped model is the same, only its thresholds' sample grew.
    assert all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), folded.model.state_dict().values()))
    assert folded.calibration["image_threshold"] != plain.calibration["image_threshold"]
    assert folded.timings["threshold_folds_s"] > 0


@pytest.mark.parametrize("folds", [1, -2, True])
def test_a_fold_count_that_cannot_hold_anything_out_is_refused(folds):
    with pytest.raises(ValueError, match="threshold folds must be 0"):
        TrainSettings(threshold_folds=folds)


def test_more_folds_than_training_images_is_one_clear_error(tmp_path, elpv_split, capsys):
    split = DataSplit("few", elpv_split.train[:4], elpv_split.val[:2], [])
    with pytest.raises(ValueError, match="at most 4 folds"):
        train(TINY, split, TrainSettings(epochs=1, threshold_folds=5, progress=False), log=lambda _: None)
    folder = tmp_path / "data" / "train" / "good"
    folder.mkdir(parents=True)
    for i, s in enumerate(elpv_split.train[:6]):
        (folder / f"{i}.png").write_bytes(s.path.read_bytes())
    code = fftrain_main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.pt"), "--image-size", "64",
                         "--epochs", "1", "--threshold-folds", "9", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "at most 5 folds" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()


def test_a_fold_model_has_a_memory_bank_of_its_own_training_images(elpv_split):
    # A bank holds 1% of its images' stride-16 patches (16 per 64x64 image): the shipped one of 24
    # images 4, each fold model's of its 16 images 3, so none holds the images it scores.
    split = DataSplit("elpv:mono (24)", elpv_split.train[:24], elpv_split.val[:8], [])
    result = train(TINY.model_copy(update={"memory_bank": "on"}), split,
                   TrainSettings(epochs=1, batch_size=16, progress=False, keep_features=True), log=lambda _: None)
    assert len(result.model.bank.bank) == round(24 * 16 * 0.01) == 4
    start = copy.deepcopy(result.model.state_dict())
    settings = for_kind(TrainSettings(epochs=1, batch_size=16, threshold_folds=3, progress=False), result.model.kind)
    held_out = out_of_fold_scores(result.model, start, result.features["train"], 24, settings, 1, lambda _: None)
    assert held_out.bank_vectors == [round(16 * 16 * 0.01)] * 3 == [3, 3, 3]
    assert len(result.model.bank.bank) == 4  # the shipped bank is untouched
    # The same through fftrain's training: the folds' thresholds count the bank too.
    folded = train(TINY.model_copy(update={"memory_bank": "on"}), split,
                   TrainSettings(epochs=1, batch_size=16, threshold_folds=3, progress=False), log=lambda _: None)
    assert folded.model.bank is not None and folded.calibration["image_estimate"]["n"] == 8 + 24

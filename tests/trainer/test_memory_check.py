"""Training refuses at once, before reading images, when its feature cache would not fit."""

from __future__ import annotations

import pytest
import torch

from ffcore.memory import NotEnoughMemoryError
from fftrain.cli import main as fftrain_main
from fftrain.config import ModelConfig
from fftrain.data import DataSplit, Sample
from fftrain.model import AnomalyModel
from fftrain.train import TrainSettings, cache_bytes, train

TINY = ModelConfig(image_size=64, flow_steps=2, hidden_ratio=0.5)


def test_cache_estimate_by_hand():
    # EfficientNet-Lite0 at 64x64: features of 24, 40 and 112 channels at strides 4, 8 and 16.
    model = AnomalyModel(TINY)
    image = 64 * 64 * 3
    feature = 4 * (24 * 16 * 16 + 40 * 8 * 8 + 112 * 4 * 4)
    pool, held_out = 10 * (1 + 4), 2 * (1 + 3)  # 4 views per image; 3 synthetic-defect strengths per validation image
    assert cache_bytes(model, 10, 2, 4) == (pool + held_out) * (image + feature) + pool * feature


def test_estimate_covers_what_training_really_caches(elpv_split):
    split = DataSplit("handmade", elpv_split.train[:6], elpv_split.val[:2], [])
    settings = TrainSettings(epochs=1, batch_size=4, augment_views=2, progress=False, keep_features=True)
    result = train(TINY, split, settings, log=lambda _: None)
    cached = sum(t.nbytes for k in ("train", "val") for t in result.features[k])
    estimate = cache_bytes(result.model, 6, 2, 2)
    # The estimate holds the features kept (training pool and validation), and is not far above
    # them plus the images: a refusal that is not a cry of wolf.
    assert cached < estimate < 3 * cached


def test_training_refuses_before_reading_any_image(elpv_split, tmp_path):
    # Missing image files: a run that got past the check would fail on reading them instead.
    ghost = [Sample(tmp_path / f"missing{i}.png", 0) for i in range(5)]
    split = DataSplit("handmade", ghost[:4], ghost[4:], [])
    with pytest.raises(NotEnoughMemoryError) as refused:
        train(TINY, split, TrainSettings(epochs=1, progress=False, memory_budget_gib=1e-4), log=lambda _: None)
    message = str(refused.value)
    assert "training on 4 images at 64x64 with 4 re-exposed views each needs about 0.0 GiB" in message
    assert "--augment-views, 4 now" in message and "--image-size" in message and "--memory-budget" in message
    # A budget that fits lets the same split go on to the image files.
    with pytest.raises(Exception) as later:
        train(TINY, split, TrainSettings(epochs=1, progress=False, memory_budget_gib=1.0), log=lambda _: None)
    assert not isinstance(later.value, NotEnoughMemoryError)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="memory budget must be a positive number of GiB"):
            TrainSettings(memory_budget_gib=bad)


def test_fftrain_says_what_to_change_and_writes_nothing(elpv_split, tmp_path, capsys):
    import shutil

    good = tmp_path / "part" / "train" / "good"
    good.mkdir(parents=True)
    for i, s in enumerate(elpv_split.train[:5]):
        shutil.copy(s.path, good / f"{i:03d}{s.path.suffix}")
    out = tmp_path / "model.pt"
    rc = fftrain_main(["--data", str(tmp_path / "part"), "--out", str(out), "--image-size", "64", "--epochs", "1",
                       "--quiet", "--memory-budget", "0.0001"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("fftrain: error: training on 4 images") and "Traceback" not in err
    assert "--augment-views" in err and not out.exists() and not list(tmp_path.glob("*.tmp"))
    # The same command within a budget trains.
    assert fftrain_main(["--data", str(tmp_path / "part"), "--out", str(out), "--image-size", "64", "--epochs", "1",
                         "--quiet", "--flow-steps", "2", "--memory-budget", "1"]) == 0
    assert torch.load(out, map_location="cpu", weights_only=True)["train_info"]["counts"]["train"] == 4

"""The memory bank beside the flows (fftrain.memory_bank): its distance, its coreset, the weight
training chooses, and that the score a checkpoint, the evaluation and the export compute counts it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ffcore.operating_point import operating_point

from fftrain import checkpoint
from fftrain.config import ModelConfig
from fftrain.memory_bank import MAP_MARGIN, MAP_WEIGHTS, WEIGHTS, MemoryBankScore, choose_map_weight, choose_weight, coreset_vectors, greedy_coreset
from fftrain.model import AnomalyModel
from fftrain.train import TrainSettings, evaluate_features, extract_features, train

TINY = dict(image_size=64, flow_steps=2, hidden_ratio=0.5)


def _brute_force_nearest(feature16: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """[N, h, w]: each 3x3-mean patch's Euclidean distance to the nearest vector."""
    pooled = F.avg_pool2d(feature16.double(), 3, stride=1, padding=1, count_include_pad=False)
    rows = pooled.flatten(2).transpose(1, 2)  # [N, hw, C]
    return torch.stack([torch.cdist(r, vectors.double()).min(1).values for r in rows]).reshape(
        len(rows), *feature16.shape[-2:])


def _brute_force_distance(feature16: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Per image: the largest over its 3x3-mean patches of the Euclidean distance to the nearest vector."""
    return _brute_force_nearest(feature16, vectors).flatten(1).amax(1)


def _upsampled(nearest: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(nearest[:, None], size=tuple(size), mode="bilinear", align_corners=False)


def test_bank_distance_is_the_nearest_patch_distance(real_images):
    model = AnomalyModel(ModelConfig(**TINY))
    feats = extract_features(model, real_images, progress=False)
    vectors = coreset_vectors(feats[2][:4])
    bank = MemoryBankScore(vectors.shape[1], len(vectors), 2, tuple(feats[2].shape[-2:]))
    bank.set_vectors(vectors)
    bank.gain.fill_(0.5)
    expected = _brute_force_distance(feats[2][4:], vectors)
    got = bank.distance([f[4:] for f in feats])
    assert torch.allclose(got.double(), expected, rtol=1e-4, atol=1e-4), (got, expected)
    map_term, score_term = bank([f[4:] for f in feats], (64, 64))
    assert map_term is None  # not in the map unless add_map put it there
    assert torch.allclose(score_term.double(), 0.5 * expected, rtol=1e-4, atol=1e-4)


def test_coreset_covers_every_cluster():
    # Three far-apart clusters of 50 points: a k-center coreset of 3 takes one from each.
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0] * 8, [100.0] * 8, [-100.0] + [0.0] * 7])
    rows = torch.cat([c + torch.randn(50, 8, generator=g) for c in centers])
    picked = greedy_coreset(rows, 3, seed=1)
    assert sorted(int(i) // 50 for i in picked) == [0, 1, 2]


def test_weight_follows_what_separates_the_synthetic_defects():
    rng = np.random.default_rng(0)
    val, syn = rng.normal(0, 1, 200), rng.normal(0.3, 1, 200)  # flows: weak separation
    flows = {"val": val, "synthetic": syn}
    sharp = {"val": rng.normal(0, 1, 200), "synthetic": rng.normal(3, 1, 200)}
    # A bank that finds the defective images closer to normal patches than the normals (misleading).
    noise = {"val": rng.normal(0, 1, 200), "synthetic": rng.normal(-1, 1, 200)}
    weight, tried = choose_weight(flows, sharp, "auto")
    assert weight == max(WEIGHTS) and set(tried) == {0.0, *WEIGHTS} and tried[1.0] > tried[0.0]
    weight, tried = choose_weight(flows, noise, "auto")
    assert weight == 0.0 and tried[0.0] > max(tried[w] for w in WEIGHTS)
    # "on" keeps a bank even then, at its least harmful weight.
    weight, tried = choose_weight(flows, noise, "on")
    assert weight == min(WEIGHTS) and 0.0 not in tried
    # A bank that ranks exactly as the flows do ties every weight: the smallest wins.
    assert choose_weight(flows, flows, "auto")[0] == 0.0 and choose_weight(flows, flows, "on")[0] == min(WEIGHTS)


def test_map_weight_follows_what_localizes_the_synthetic_defects():
    # 20 normal maps and 20 defective ones, 8x8; the defect: the top-left 2x2 pixels.
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 8, 8), bool)
    masks[:, :2, :2] = True
    noise = lambda: rng.normal(0, 1, (40, 8, 8)).astype(np.float32)  # noqa: E731
    flows = noise()
    flows[20:][masks] += 0.3  # the flows' map marks the defects weakly
    sharp = noise()
    sharp[20:][masks] += 4.0  # the bank's marks them clearly
    wrong = noise()
    wrong[20:][~masks] += 2.0  # the bank's lights up everywhere but the defect (misleading)
    weight, tried = choose_map_weight(flows, sharp, masks, 20, "auto")
    assert weight == max(MAP_WEIGHTS) and set(tried) == {0.0, *MAP_WEIGHTS} and tried[1.0] > tried[0.0]
    weight, tried = choose_map_weight(flows, wrong, masks, 20, "auto")
    assert weight == 0.0 and tried[0.0] > max(tried[w] for w in MAP_WEIGHTS)
    weight, tried = choose_map_weight(flows, wrong, masks, 20, "on")
    assert weight == min(MAP_WEIGHTS) and 0.0 not in tried
    # The bank's map is standardized by the normals' pixels: its units do not change the choice.
    assert choose_map_weight(flows, 1000 * sharp + 5, masks, 20, "auto") == choose_map_weight(flows, sharp, masks, 20, "auto")


def test_map_weight_needs_a_clear_gain_over_the_flows_map():
    # A bank map that is the flows' own plus noise, a little more on the defects: its best weight
    # beats the flows' map alone, but by less than MAP_MARGIN.
    rng = np.random.default_rng(1)
    masks = np.zeros((20, 8, 8), bool)
    masks[:, :2, :2] = True
    flows = rng.normal(0, 1, (40, 8, 8)).astype(np.float32)
    flows[20:][masks] += 0.3
    mild = flows + 0.3 * rng.normal(0, 1, (40, 8, 8)).astype(np.float32)
    mild[20:][masks] += 0.05
    weight, tried = choose_map_weight(flows, mild, masks, 20, "auto")
    gain = max(tried.values()) - tried[0.0]
    assert 0 < gain < MAP_MARGIN  # the case this test is about
    assert weight == 0.0
    # Asked for ("on"), the bank joins at its best weight all the same.
    weight, tried = choose_map_weight(flows, mild, masks, 20, "on")
    assert weight == max(tried, key=tried.get) and weight in MAP_WEIGHTS


@pytest.fixture(scope="module")
def bank_model(elpv_split, tmp_path_factory):
    result = train(ModelConfig(**TINY, memory_bank="on"), elpv_split,
                   TrainSettings(epochs=1, batch_size=16, progress=False, keep_features=True), log=lambda _: None)
    path = tmp_path_factory.mktemp("bank") / "model.pt"
    checkpoint.save(path, result.model, result.calibration, {"parity_images": [str(s.path) for s in elpv_split.val[:4]]})
    return result, path


def test_training_adds_the_bank_to_the_score_it_calibrates(bank_model, real_images):
    result, path = bank_model
    model, cfg = result.model.eval(), result.model.config
    assert cfg.memory_bank_weight in WEIGHTS and cfg.memory_bank_vectors == len(model.bank.bank) > 0
    # The bank holds patches of the 48 training images only (1% of their 48 x 16 stride-16 patches).
    assert cfg.memory_bank_vectors == round(48 * 16 * 0.01)
    x = torch.from_numpy(real_images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        feats = model.extract(x)
        _, flows_only = model.head(model.head_inputs(*model.flow(feats)))
        _, score = model(x)
        expected = flows_only.double() + float(model.bank.gain) * _brute_force_distance(feats[2], model.bank.bank + model.bank.center)
        assert float(model.bank.gain) > 0
        assert torch.allclose(score.double(), expected, rtol=1e-4, atol=1e-4)
        # The evaluation that sets thresholds scores as the model does; without the bank it is the flows alone.
        assert torch.allclose(evaluate_features(model, feats)[2], score, rtol=1e-5, atol=1e-5)
        assert torch.allclose(evaluate_features(model, feats, with_bank=False)[2], flows_only, rtol=1e-5, atol=1e-5)
    # The gain puts the weight on the flows' scale: weight x spread of the validation normals'
    # flows scores / spread of their bank distances.
    val = result.features["val"]
    flows_val = evaluate_features(model, val, with_bank=False)[2].numpy().astype(np.float64)
    distances_val = _brute_force_distance(val[2], model.bank.bank + model.bank.center).numpy()
    assert float(model.bank.gain) == pytest.approx(cfg.memory_bank_weight * flows_val.std() / distances_val.std(), rel=1e-3)
    val_scores = evaluate_features(model, val)[2].numpy()
    assert result.calibration["score_stats"]["max"] == pytest.approx(float(val_scores.max()), rel=1e-5)
    # The checkpoint rebuilds the same bank and the same scores and maps.
    loaded, payload = checkpoint.load(path)
    assert payload["config"]["memory_bank_vectors"] == cfg.memory_bank_vectors
    with torch.no_grad():
        loaded_map, loaded_score = loaded.eval()(x)
        assert torch.allclose(loaded_score, score, rtol=1e-6, atol=1e-6)
        assert torch.allclose(loaded_map, model(x)[0], rtol=1e-6, atol=1e-6)


def test_training_adds_the_bank_map_to_the_map_it_calibrates(bank_model, real_images):
    """memory_bank "on": the map is the flows' plus map weight x the bank's per-patch distances,
    upsampled and standardized by the validation normals' pixels; the pixel threshold is set on it."""
    result, _ = bank_model
    model, cfg = result.model.eval(), result.model.config
    assert model.bank.in_map and cfg.memory_bank_map_weight in MAP_WEIGHTS
    size = cfg.image_size
    vectors = model.bank.bank + model.bank.center
    val = result.features["val"]
    val_maps = _upsampled(_brute_force_nearest(val[2], vectors), size)
    assert float(model.bank.map_offset) == pytest.approx(float(val_maps.mean()), rel=1e-4)
    assert float(model.bank.map_gain) == pytest.approx(cfg.memory_bank_map_weight / float(val_maps.std(unbiased=False)),
                                                       rel=1e-3)
    x = torch.from_numpy(real_images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        feats = model.extract(x)
        flows_map, _ = model.head(model.head_inputs(*model.flow(feats)))
        anomaly_map, _ = model(x)
        bank_map = _upsampled(_brute_force_nearest(feats[2], vectors), size)
        expected = flows_map.double() + cfg.memory_bank_map_weight * (bank_map - val_maps.mean()) / val_maps.std(unbiased=False)
        assert torch.allclose(anomaly_map.double(), expected, rtol=1e-3, atol=1e-3)
        assert (anomaly_map - flows_map).abs().max() > 0.1  # the bank's map counts
        assert torch.allclose(evaluate_features(model, feats)[1], anomaly_map, rtol=1e-5, atol=1e-5)
        assert torch.allclose(evaluate_features(model, feats, with_bank=False)[1], flows_map, rtol=1e-5, atol=1e-5)
        val_peaks = evaluate_features(model, val)[1].flatten(1).amax(1).numpy().astype(np.float64)
        flows_peaks = evaluate_features(model, val, with_bank=False)[1].flatten(1).amax(1).numpy().astype(np.float64)
    # The pixel threshold is fftrain's rule on the peaks of the maps the model returns, not the flows' alone.
    target = result.settings.target_frr
    assert result.calibration["pixel_threshold"] == pytest.approx(operating_point(val_peaks, target).threshold, rel=1e-5)
    assert operating_point(flows_peaks, target).threshold != pytest.approx(result.calibration["pixel_threshold"], rel=1e-3)


def test_no_bank_when_off_nor_in_old_checkpoints(elpv_split, tiny_checkpoint):
    result = train(ModelConfig(**TINY, memory_bank="off"), elpv_split, TrainSettings(epochs=1, progress=False),
                   log=lambda _: None)
    assert result.model.bank is None and result.model.config.memory_bank_vectors == 0
    assert not any(k.startswith("bank.") for k in result.model.state_dict())
    assert checkpoint.legacy_config({}, {})["memory_bank"] == "off"


def test_a_refit_keeps_the_decision_training_made(bank_model, elpv_split):
    """ffexport's INT8 / BF16 re-fits warm-start train() on a trained model: one trained with a bank
    gets it re-fitted at its weight; one whose check kept none (the same state: config "on" or
    "auto" with no vectors) gets none, whatever a new check would say."""
    import copy

    result, _ = bank_model
    settings = TrainSettings(epochs=1, batch_size=16, progress=False)
    with_bank = copy.deepcopy(result.model)
    refit = train(with_bank.config, elpv_split, settings, log=lambda _: None, model=with_bank)
    assert refit.model.bank is not None and refit.model.config.memory_bank_weight == result.model.config.memory_bank_weight
    assert refit.model.bank.in_map and refit.model.config.memory_bank_map_weight == result.model.config.memory_bank_map_weight
    without = copy.deepcopy(result.model)
    without.bank = None
    without.config = without.config.model_copy(update={"memory_bank_vectors": 0, "memory_bank_weight": 0.0})
    refit = train(without.config, elpv_split, settings, log=lambda _: None, model=without)
    assert refit.model.bank is None and refit.model.config.memory_bank_vectors == 0

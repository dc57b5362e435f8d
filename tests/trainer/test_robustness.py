"""Hard synthetic defects, exposure changes and augmentation: drawn on real ELPV images."""

from __future__ import annotations

import numpy as np
import pytest

from ffcore import synthetic
from fftrain import augment
from fftrain.data import load_batch


@pytest.fixture(scope="module")
def cells(elpv_split):
    return load_batch(elpv_split.val[:6], (96, 128))  # non-square on purpose


@pytest.mark.parametrize("kind", synthetic.HARD_KINDS)
def test_hard_defect_is_where_its_mask_is_and_grows_with_strength(kind, cells):
    img = cells[0]
    changes = []
    for strength in (0.35, 1.0):
        out, mask = synthetic.add_defect(img, np.random.default_rng(5), kind, strength)
        assert out.shape == img.shape and mask.shape == img.shape[:2]
        assert 0 < mask.sum() < mask.size * 0.5
        diff = np.abs(out.astype(int) - img.astype(int)).max(axis=2)
        # The masked region is where the image changed most.
        assert diff[mask].mean() > 2 * diff[~mask].mean() + 0.5, (kind, strength)
        changes.append(diff[mask].mean())
    # Same seed, same shape: a stronger defect changes the same pixels more.
    assert changes[1] > changes[0], (kind, changes)


def test_hard_defects_are_fainter_than_easy_ones(cells):
    rng = np.random.default_rng(0)
    easy = [synthetic.add_defect(c, rng, "crack") for c in cells]
    faint = [synthetic.add_defect(c, rng, "faint_crack", 0.35) for c in cells]

    def contrast(pairs, images):
        return np.mean([np.abs(o.astype(int) - i.astype(int)).max(axis=2)[m].mean() for (o, m), i in zip(pairs, images)])

    assert contrast(faint, cells) < 0.5 * contrast(easy, cells)


def test_hard_defect_batch_covers_every_kind_and_strength_deterministically(cells):
    a, ma, la = synthetic.hard_defect_batch(cells[:5], seed=3)
    b, mb, lb = synthetic.hard_defect_batch(cells[:5], seed=3)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert a.shape == (5 * len(synthetic.HARD_STRENGTHS),) + cells.shape[1:]
    assert sorted(set(la.tolist())) == sorted(synthetic.HARD_STRENGTHS)
    assert all(m.any() for m in ma)


def test_hard_defect_plan_names_the_kind_each_drawn_image_has(cells):
    plan = synthetic.hard_defect_plan(len(cells))
    _, masks, levels = synthetic.hard_defect_batch(cells, seed=3)
    assert len(plan) == len(masks) and [s for _, _, s in plan] == levels.tolist()
    assert {(k, s) for _, k, s in plan} == {(k, s) for k in synthetic.HARD_KINDS for s in synthetic.HARD_STRENGTHS}
    assert [i for i, _, _ in plan] == list(range(len(cells))) * len(synthetic.HARD_STRENGTHS)
    # The names match what was drawn: an "uneven" area covers a third of the part, a spot a few pixels.
    area = {k: np.median([m.mean() for m, (_, kk, _) in zip(masks, plan) if kk == k]) for k in synthetic.HARD_KINDS}
    assert area["uneven"] > 5 * area["spot"] and area["uneven"] > 5 * area["faint_crack"]


def test_caught_by_kind_counts_what_the_part_decision_rejects():
    plan = synthetic.hard_defect_plan(2, strengths=(0.35, 1.0))
    assert [(k, s) for _, k, s in plan] == [("faint_crack", 0.35), ("spot", 0.35), ("spot", 1.0), ("uneven", 1.0)]
    # A score equal to the threshold passes (score > threshold fails); a NaN score fails, as in the runtime.
    caught = synthetic.caught_by_kind(np.array([1.0, 2.0, 3.0, np.nan]), 2.0, plan)
    assert caught == {"all": 0.5, "by_kind": {"faint_crack": 0.0, "spot": 0.5, "uneven": 1.0},
                      "by_strength": {"0.35": 0.0, "1": 1.0}}
    line = synthetic.caught_summary(caught)
    assert "rejected at the image threshold: 50% (faint crack 0%, spot 50%, uneven 100%" in line
    assert "at contrast 0.35 / 1: 0% / 100%" in line and "Synthetic" in line
    with pytest.raises(ValueError, match="3 scores for 4 drawn defects"):
        synthetic.caught_by_kind(np.zeros(3), 0.0, plan)


def test_pooling_hint_only_where_the_threshold_passes_most_unevenness_of_unpooled_features():
    from fftrain.train import pooling_hint

    def caught(uneven):
        return {"all": 0.5, "by_kind": {"spot": 0.9, "uneven": uneven}, "by_strength": {}}

    assert "only 20% of the drawn large soft unevenness" in pooling_hint(caught(0.2), 1)
    assert "--feature-pooling 3" in pooling_hint(caught(0.0), 1)
    assert pooling_hint(caught(0.5), 1) is None  # half or more rejected: no note
    assert pooling_hint(caught(0.2), 3) is None  # already pooled
    assert pooling_hint({"all": 0.5, "by_kind": {"spot": 0.1}, "by_strength": {}}, 1) is None


def test_reexpose():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(synthetic.reexpose(img), img)  # identity settings change nothing
    bright = synthetic.reexpose(img, gain=1.3)
    assert (bright.astype(int) >= img).all() and bright.mean() > img.mean() + 20
    # gamma < 1 lifts the mid-tones, keeps black and white
    lifted = synthetic.reexpose(img, gamma=0.75)
    assert lifted[8, 0, 0] > img[8, 0, 0] and lifted[0, 0, 0] == 0 and lifted[-1, -1, 0] == 255


def test_augmented_views_vary_exposure_and_keep_the_content(cells):
    views = augment.augmented_views(cells[:3], views=4, seed=1)
    assert views.shape == (12,) + cells.shape[1:] and views.dtype == np.uint8
    assert np.array_equal(views, augment.augmented_views(cells[:3], views=4, seed=1))
    means = views.reshape(12, -1).mean(1)
    assert means.std() > 5  # exposure differs between views
    # Without the shift, a view is a monotone re-exposure of the same part plus sensor
    # noise: its pixels keep their order (rank correlation near 1).
    rng = np.random.default_rng(2)
    for img in cells[:3]:
        view = augment.augmented_view(img, rng, augment.PhotometricRange(shift_fraction=0.0))
        ranks = [np.argsort(np.argsort(a.astype(float).ravel())) for a in (img[..., 0], view[..., 0])]
        assert np.corrcoef(*ranks)[0, 1] > 0.9


def test_jpeg_round_trip_keeps_grey_cells_grey_and_loses_more_at_lower_quality(cells):
    errors = []
    for quality in (95, 50):
        coded = augment.jpeg_round_trip(cells[0], quality)
        assert coded.shape == cells[0].shape and coded.dtype == np.uint8
        assert (coded[..., 0] == coded[..., 1]).all() and (coded[..., 1] == coded[..., 2]).all()
        errors.append(np.abs(coded.astype(int) - cells[0].astype(int)).mean())
    assert 0 < errors[0] < errors[1] < 8, errors
    tinted = cells[0].copy()
    tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 40, 0, 255)  # a colour image: coded in colour
    coded = augment.jpeg_round_trip(tinted, 75)
    assert np.abs(coded.astype(int) - tinted.astype(int)).mean() < 8
    assert coded[..., 0].mean() > coded[..., 1].mean() + 20  # red and green stay apart (RGB order kept)


def test_jpeg_share_changes_only_the_coded_views(cells):
    """The codec's draws are taken for every view, so the share of coded views changes those
    views alone: a view with p=1 is its p=0 twin after a JPEG round trip (a few levels off)."""
    plain = augment.augmented_views(cells[:2], 3, seed=4, r=augment.PhotometricRange(jpeg_probability=0.0))
    coded = augment.augmented_views(cells[:2], 3, seed=4, r=augment.PhotometricRange(jpeg_probability=1.0))
    assert np.array_equal(plain, augment.augmented_views(cells[:2], 3, seed=4))  # the default: no codec
    half = augment.augmented_views(cells[:2], 3, seed=4, r=augment.PhotometricRange(jpeg_probability=0.5))
    for p, c, h in zip(plain, coded, half):
        diff = np.abs(p.astype(int) - c.astype(int)).mean()
        assert 0 < diff < 5, diff
        assert np.array_equal(h, p) or np.array_equal(h, c)
    n_coded = sum(not np.array_equal(h, p) for h, p in zip(half, plain))
    assert 0 < n_coded < len(half)

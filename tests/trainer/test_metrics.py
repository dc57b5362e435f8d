"""Tests for ffcore.metrics on hand-computed cases plus randomized cross-checks.

Expected values are worked out by hand in the comment next to each case.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from ffcore import metrics
from ffcore.metrics import (
    aupro,
    f1_at_threshold,
    f1_max,
    pixel_auroc,
    precision_recall_at_threshold,
    roc_auc,
    roc_curve,
    threshold_at_frr,
)

# ---------------------------------------------------------------------------------------
# roc_auc / roc_curve
# ---------------------------------------------------------------------------------------


def test_roc_auc_hand_case():
    # positives {0.35, 0.8}, negatives {0.1, 0.4}; pairs (pos > neg):
    # 0.35>0.1 yes, 0.35>0.4 no, 0.8>0.1 yes, 0.8>0.4 yes -> 3/4
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75, abs=1e-12)


def test_roc_auc_ties_count_half():
    # positives {0.5, 0.9}, negatives {0.5, 0.2}
    # 0.5 vs 0.5 tie -> 1/2; 0.5 vs 0.2 -> 1; 0.9 vs both -> 2; total 3.5/4 = 0.875
    # (average ranks: 0.2->1, 0.5,0.5->2.5, 0.9->4; U = 2.5+4 - 2*3/2 = 3.5)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875, abs=1e-12)
    # every score tied: every pair counts 1/2 -> 0.5
    assert roc_auc([0, 1, 0, 1, 1], [3.0] * 5) == pytest.approx(0.5, abs=1e-12)


def test_roc_auc_perfect_and_inverted():
    labels = [0, 0, 0, 1, 1]
    # every positive above every negative -> 1; reversed ordering -> 0
    assert roc_auc(labels, [0.1, 0.2, 0.3, 0.8, 0.9]) == 1.0
    assert roc_auc(labels, [0.8, 0.9, 0.7, 0.1, 0.2]) == 0.0
    # bool labels and float32 scores are accepted and give the same answer
    assert roc_auc(np.array(labels, bool), np.array([0.1, 0.2, 0.3, 0.8, 0.9], np.float32)) == 1.0


def test_roc_curve_hand_case():
    # descending: 0.8(pos) 0.4(neg) 0.35(pos) 0.1(neg); n_pos = n_neg = 2
    # (0,0) thr inf; >=0.8 -> tp1 fp0 (0, .5); >=0.4 -> (.5, .5); >=0.35 -> (.5, 1); >=0.1 -> (1, 1)
    fpr, tpr, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    # trapezoid area: 0.5*0.5 + 0.5*1 = 0.75 = roc_auc
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75, abs=1e-12)


def test_roc_curve_tied_scores_form_one_point():
    # descending: 0.9(pos), {0.5 pos, 0.5 neg}, 0.2(neg): the tie enters at once
    # points: (0,0) (0,.5) (.5,1) (1,1) - no point separates the two 0.5 samples
    fpr, tpr, thr = roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 0.9, 0.5, 0.2])
    # area: 0 + diagonal .5*(.5+1)/2 = .375 + .5*1 = .875 = roc_auc with ties at 1/2
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.875, abs=1e-12)


@pytest.mark.parametrize("fn", [roc_auc, roc_curve])
def test_roc_errors(fn):
    with pytest.raises(ValueError, match="both classes"):
        fn([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="both classes"):
        fn([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        fn([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        fn([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0 and 1"):
        fn([0, 2], [0.1, 0.2])


def _brute_auc(labels, scores):
    pos = scores[labels == 1][:, None]
    neg = scores[labels == 0][None, :]
    return ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_matches_brute_force_pairs(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    # seeds alternate between mostly-normal and mostly-anomalous sets, so both
    # search directions inside the implementation are exercised
    p_pos = 0.2 if seed % 2 else 0.8
    labels = (rng.random(n) < p_pos).astype(int)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 12, n).astype(float)  # few values -> many ties
    if seed >= 3:
        scores = scores + rng.normal(0, 3, n)  # mostly distinct scores
    expected = _brute_auc(labels, scores)
    assert roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-12)
    # tiny search blocks exercise the blocked loop used for huge pixel sets
    monkeypatch.setattr(metrics, "_SEARCH_BLOCK", 7)
    assert roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------------------------------
# pixel_auroc
# ---------------------------------------------------------------------------------------


def test_pixel_auroc_hand_case():
    # defect pixels {0.35, 0.8}, normal pixels {0.1, 0.4} -> same as the roc_auc case, 0.75
    masks = np.array([[[0, 1]], [[0, 1]]], dtype=np.uint8)  # [2,1,2]
    maps = np.array([[[0.1, 0.35]], [[0.4, 0.8]]], dtype=np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(0.75, abs=1e-12)


def test_pixel_auroc_equals_roc_auc_on_flattened_pixels():
    rng = np.random.default_rng(7)
    masks = rng.random((3, 9, 11)) < 0.3
    maps = np.round(rng.random((3, 9, 11)), 1).astype(np.float32)  # ties across classes
    expected = _brute_auc(masks.ravel().astype(int), maps.ravel().astype(np.float64))
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    # mostly-defect masks take the other search direction
    assert pixel_auroc(~masks, maps) == pytest.approx(1.0 - expected, abs=1e-12)


def test_pixel_auroc_errors():
    maps = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="both defect and normal"):
        pixel_auroc(np.zeros((1, 2, 2), bool), maps)
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(np.zeros((1, 2, 3), bool), maps)
    with pytest.raises(ValueError, match="0 and 1"):
        pixel_auroc(np.array([[[0, 255], [0, 0]]], np.uint8), maps)
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(np.array([[[0, 1], [0, 0]]]), np.array([[[0, np.nan], [0, 0]]]))


# ---------------------------------------------------------------------------------------
# aupro
# ---------------------------------------------------------------------------------------


def _aupro_case():
    """Two 3x3 images, two regions.

    image 0: region R1 = {(0,0), (1,1)}: diagonal, one region only under 8-connectivity,
             size 2 -> each pixel adds 1/(2 regions * 2) = .25 to PRO
    image 1: region R2 = the 2x2 block at the top left, size 4 -> each adds 1/(2*4) = .125
    normal pixels: 7 + 5 = 12 -> each adds 1/12 to FPR
    """
    masks = np.zeros((2, 3, 3), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = 1
    masks[1, :2, :2] = 1
    maps = np.full((2, 3, 3), 0.1)
    maps[0, 0, 0], maps[0, 1, 1] = 0.9, 0.5  # R1
    maps[1, 0, 0], maps[1, 0, 1], maps[1, 1, 0], maps[1, 1, 1] = 0.8, 0.8, 0.6, 0.2  # R2
    maps[0, 2, 2] = 0.7  # a normal pixel
    maps[1, 2, 2] = 0.5  # a normal pixel tied with R1's 0.5
    # sweep, descending distinct scores -> (FPR, PRO):
    #   0.9: R1        -> (0,    .25 )
    #   0.8: R2 x2     -> (0,    .5  )
    #   0.7: normal    -> (1/12, .5  )
    #   0.6: R2        -> (1/12, .625)
    #   0.5: R1+normal -> (2/12, .875)   one diagonal segment (tie)
    #   0.2: R2        -> (2/12, 1   )
    #   0.1: 10 normal -> (1,    1   )
    return masks, maps


def test_aupro_two_images_two_regions_full_range():
    masks, maps = _aupro_case()
    # areas: (0,.5)->(1/12,.5): .5/12 = 2/48; (1/12,.625)->(2/12,.875): (1/12)(.75) = 3/48;
    # (2/12,1)->(1,1): 10/12 = 40/48; total 45/48 = 0.9375 (normalized by 1)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(45 / 48, abs=1e-12)


def test_pro_curve_is_the_sweep_by_hand():
    from ffcore.metrics import pro_curve

    masks, maps = _aupro_case()
    fpr, pro = pro_curve(masks, maps, fpr_limit=1.0)
    # The sweep in _aupro_case as a polyline (region-only steps are vertical, the tie at 0.5 diagonal).
    points = {(round(f, 12), round(p, 12)) for f, p in zip(fpr, pro)}
    assert points == {(0.0, 0.5), (round(1 / 12, 12), 0.5), (round(1 / 12, 12), 0.625), (round(2 / 12, 12), 0.875),
                      (round(2 / 12, 12), 1.0), (1.0, 1.0)}
    assert np.all(np.diff(fpr) >= 0)
    # Ends on the limit, interpolated inside the diagonal step (PRO(1/8) = .75, see below).
    fpr, pro = pro_curve(masks, maps, fpr_limit=0.125)
    assert (fpr[-1], pro[-1]) == (0.125, pytest.approx(0.75, abs=1e-12))


def test_aupro_default_limit():
    masks, maps = _aupro_case()
    # up to FPR .3: 2/48 + 3/48 + (0.3 - 2/12) * 1 = 5/48 + 2/15 = 57/240; / 0.3 = 57/72
    assert aupro(masks, maps) == pytest.approx(57 / 72, abs=1e-12)


def test_aupro_interpolates_at_fpr_limit():
    masks, maps = _aupro_case()
    # limit 1/8 falls inside the diagonal (1/12,.625)->(2/12,.875), slope .25/(1/12) = 3:
    # PRO(1/8) = .625 + 3*(1/8 - 1/12) = .75; area = 1/24 + (1/24)(.625+.75)/2 = .0703125
    # normalized: .0703125 / .125 = .5625
    assert aupro(masks, maps, fpr_limit=0.125) == pytest.approx(0.5625, abs=1e-12)
    # limit .05 falls inside the flat (0,.5)->(1/12,.5): area .05*.5, normalized .5
    assert aupro(masks, maps, fpr_limit=0.05) == pytest.approx(0.5, abs=1e-12)


def test_aupro_regions_are_8_connected():
    masks, maps = _aupro_case()
    # If R1 were split 4-connected into two 1-pixel regions there would be 3 regions and
    # the answer would change; 8-connected it must equal the 2-region hand value above.
    # Check by giving only the two diagonal pixels high scores: PRO jumps to exactly 1/2
    # at FPR 0 (one of two regions fully found), not 2/3 (two of three regions).
    maps2 = np.zeros_like(maps)
    maps2[0, 0, 0] = maps2[0, 1, 1] = 1.0
    # curve: (0, .5) then all remaining pixels tie at 0 -> diagonal to (1, 1)
    # area up to .3: .3 * (.5 + (.5 + .5*.3)) / 2 = .3 * .575; normalized .575
    assert aupro(masks, maps2) == pytest.approx(0.575, abs=1e-12)


def test_aupro_perfect_and_errors():
    masks, maps = _aupro_case()
    perfect = np.where(masks > 0, 1.0, 0.0)
    assert aupro(masks, perfect) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="region"):
        aupro(np.zeros_like(masks), maps)
    with pytest.raises(ValueError, match="normal pixels"):
        aupro(np.ones_like(masks), maps)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(masks, maps, fpr_limit=bad)


def _regions_8(mask):
    """8-connected components by breadth-first search (independent of OpenCV)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    out = []
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or seen[y0, x0]:
                continue
            region = np.zeros_like(mask, bool)
            queue = deque([(y0, x0)])
            seen[y0, x0] = True
            while queue:
                y, x = queue.popleft()
                region[y, x] = True
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            queue.append((yy, xx))
            out.append(region)
    return out


def _slow_aupro(masks, maps, fpr_limit, thresholds):
    """Reference: evaluate PRO/FPR with `map > t` for each t of a grid, then integrate."""
    masks = masks.astype(bool)
    regions = []  # (image index, region mask)
    for i, m in enumerate(masks):
        regions += [(i, r) for r in _regions_8(m)]
    normal = ~masks
    points = []
    for t in sorted(thresholds, reverse=True):
        pred = maps > t
        fpr = np.count_nonzero(pred & normal) / np.count_nonzero(normal)
        pro = np.mean([np.count_nonzero(pred[i] & r) / np.count_nonzero(r) for i, r in regions])
        points.append((fpr, pro))
    area = 0.0
    for (f0, p0), (f1, p1) in zip(points[:-1], points[1:]):
        if f1 <= fpr_limit:
            area += (f1 - f0) * (p0 + p1) / 2
        else:
            if f0 < fpr_limit:
                p_lim = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
                area += (fpr_limit - f0) * (p0 + p_lim) / 2
            break
    return area / fpr_limit


@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_slow_reference(seed):
    rng = np.random.default_rng(100 + seed)
    n, h, w = 3, 12, 14
    masks = rng.random((n, h, w)) < 0.12  # many small blobs, some touching diagonally
    masks[1] = False  # an image without defects contributes only normal pixels
    masks[0, 0, 0] = True
    # scores rounded to 2 decimals -> ties within and across classes; defects score higher
    maps = np.round(rng.random((n, h, w)) * 0.7 + 0.3 * masks, 2).astype(np.float32)
    # grid = every distinct score, plus one below all of them so every pixel ends up flagged
    grid = np.r_[np.unique(maps), -np.inf]
    for limit in (0.3, 0.05, 1.0, 0.1234):
        expected = _slow_aupro(masks, maps, limit, grid)
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------------------------------
# F1, precision/recall (rule: score > threshold)
# ---------------------------------------------------------------------------------------

F1_LABELS = [0, 0, 1, 1, 0, 1]
F1_SCORES = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]


def test_f1_max_hand_case():
    # descending 0.9(1) 0.8(1) 0.7(0) 0.4(0) 0.35(1) 0.1(0); n_pos = 3; F1 = 2TP/(flagged+3)
    # >=0.9: 2/4=.5  >=0.8: 4/5=.8  >=0.7: 4/6  >=0.4: 4/7  >=0.35: 6/8=.75  >=0.1: 6/9
    # best .8 flagging {0.9, 0.8}; for `score > t` the midpoint to the next score: 0.75
    best, thr = f1_max(F1_LABELS, F1_SCORES)
    assert best == pytest.approx(0.8, abs=1e-12)
    assert thr == pytest.approx(0.75, abs=1e-12)
    assert f1_at_threshold(F1_LABELS, F1_SCORES, thr) == pytest.approx(best, abs=1e-12)


def test_f1_max_threshold_works_with_strict_rule_at_lowest_score():
    # labels [1,0,1], scores [.9,.5,.5]: >=.9: 2/(1+2)=.667; >=.5: TP2 flagged3 -> 4/5=.8
    # the best point flags the lowest score, so the threshold must sit just below 0.5
    best, thr = f1_max([1, 0, 1], [0.9, 0.5, 0.5])
    assert best == pytest.approx(0.8, abs=1e-12)
    assert thr < 0.5 and thr == pytest.approx(0.5, abs=1e-12)
    assert f1_at_threshold([1, 0, 1], [0.9, 0.5, 0.5], thr) == pytest.approx(0.8, abs=1e-12)
    # with the strict rule, threshold 0.5 itself leaves both 0.5 samples normal:
    # TP1 FP0 FN1 -> 2/(2+0+1) = 2/3
    assert f1_at_threshold([1, 0, 1], [0.9, 0.5, 0.5], 0.5) == pytest.approx(2 / 3, abs=1e-12)


def test_f1_max_prefers_highest_threshold_on_tie():
    # scores 4(1) 3(0) 2(0) 1(1), n_pos 2: >=4: 2/3; >=3: 2/4; >=2: 2/5; >=1: 4/6 = 2/3
    # tie between >=4 and >=1 -> highest wins: midpoint (4+3)/2 = 3.5
    best, thr = f1_max([1, 0, 0, 1], [4.0, 3.0, 2.0, 1.0])
    assert best == pytest.approx(2 / 3, abs=1e-12)
    assert thr == 3.5


@pytest.mark.parametrize("seed", range(3))
def test_f1_max_is_max_of_f1_at_threshold(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(60) < 0.4).astype(int)
    labels[0] = 1
    scores = rng.integers(0, 15, 60).astype(float)
    best, thr = f1_max(labels, scores)
    # brute force over `score > t` for t below every distinct score
    cands = [f1_at_threshold(labels, scores, t) for t in np.r_[np.unique(scores), -np.inf]]
    assert best == pytest.approx(max(cands), abs=1e-12)
    assert f1_at_threshold(labels, scores, thr) == pytest.approx(best, abs=1e-12)


def test_f1_at_threshold_hand_case():
    # > 0.5 flags 0.9(1) 0.8(1) 0.7(0): TP2 FP1 FN1 -> 4/(4+1+1) = 2/3
    assert f1_at_threshold(F1_LABELS, F1_SCORES, 0.5) == pytest.approx(2 / 3, abs=1e-12)
    # > 0.8 (strict) flags only 0.9: TP1 FP0 FN2 -> 2/(2+0+2) = .5
    assert f1_at_threshold(F1_LABELS, F1_SCORES, 0.8) == pytest.approx(0.5, abs=1e-12)


def test_precision_recall_at_threshold_hand_case():
    # > 0.5: TP2 FP1 FN1 -> P 2/3, R 2/3
    p, r = precision_recall_at_threshold(F1_LABELS, F1_SCORES, 0.5)
    assert (p, r) == pytest.approx((2 / 3, 2 / 3), abs=1e-12)
    # > 0.8 (strict, 0.8 itself is normal): TP1 FP0 FN2 -> P 1, R 1/3
    p, r = precision_recall_at_threshold(F1_LABELS, F1_SCORES, 0.8)
    assert (p, r) == pytest.approx((1.0, 1 / 3), abs=1e-12)
    # nothing flagged -> precision reported as 0.0, recall 0
    assert precision_recall_at_threshold(F1_LABELS, F1_SCORES, 0.9) == (0.0, 0.0)


def test_thresholded_metrics_errors():
    for fn in (f1_at_threshold, precision_recall_at_threshold):
        with pytest.raises(ValueError, match="anomalous"):
            fn([0, 0], [0.1, 0.2], 0.15)
        with pytest.raises(ValueError, match="length"):
            fn([0, 1], [0.1], 0.15)
        with pytest.raises(ValueError, match="NaN"):
            fn([0, 1], [0.1, 0.2], float("nan"))
    with pytest.raises(ValueError, match="anomalous"):
        f1_max([0, 0], [0.1, 0.2])


# ---------------------------------------------------------------------------------------
# threshold_at_frr
# ---------------------------------------------------------------------------------------


def test_threshold_at_frr_on_100_values():
    rng = np.random.default_rng(0)
    normals = rng.permutation(np.arange(1, 101)).astype(float)  # 1..100, shuffled
    # 5% of 100 -> at most 5 above t; smallest t is 95 (96..100 above; 94.x would give 6)
    assert threshold_at_frr(normals, 0.05) == 95.0
    # 0.29*100 = 28.999.. in floats; still k = 29 -> t = 71 (72..100 = 29 above)
    assert threshold_at_frr(normals, 0.29) == 71.0
    # target 0 -> nothing above -> the max
    assert threshold_at_frr(normals, 0.0) == 100.0
    # 0.999 -> k = 99 -> t = 1 (99 values above)
    assert threshold_at_frr(normals, 0.999) == 1.0
    # 0.055 -> k = floor(5.5) = 5 -> 95 as for 0.05
    assert threshold_at_frr(normals, 0.055) == 95.0
    # property over many targets: FRR on the data <= target, and the next lower data value
    # would exceed it (so t is the smallest such threshold)
    for target in np.linspace(0, 0.99, 37):
        t = threshold_at_frr(normals, target)
        assert np.mean(normals > t) <= target
        lower = normals[normals < t]
        if lower.size:
            assert np.mean(normals > lower.max()) > target


def test_threshold_at_frr_ties():
    # sorted [1,2,2,2,3], n=5
    s = [2, 3, 2, 1, 2]
    assert threshold_at_frr(s, 0.2) == 2.0  # k=1 -> sorted[3]=2; only 3 above (1/5)
    assert threshold_at_frr(s, 0.1) == 3.0  # k=0 -> max
    assert threshold_at_frr(s, 0.5) == 2.0  # k=2 -> sorted[2]=2; 1 above; 1.5 would give 4


def test_threshold_at_frr_errors():
    with pytest.raises(ValueError, match="empty"):
        threshold_at_frr([], 0.1)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="target_frr"):
            threshold_at_frr([1.0, 2.0], bad)
    with pytest.raises(ValueError, match="NaN"):
        threshold_at_frr([1.0, np.nan], 0.1)

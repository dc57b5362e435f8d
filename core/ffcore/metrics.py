"""Evaluation metrics for anomaly detection: image AUROC, pixel AUROC, AUPRO, F1 and thresholds
(the gates' rank correlation is rankcorr.py).

Only numpy and OpenCV are used, so the metrics can run wherever the runtime runs, without
torch or scikit-learn.

Conventions shared by every function here:

* Labels are 0/1 (or bool); **1 means anomalous and is the positive class.**
* Scores (and anomaly-map values) are "higher is more anomalous".
* **Decision rule: ``score > threshold`` means anomalous** (strictly greater). This is the
  rule the runtime applies to ``Thresholds.image`` and ``Thresholds.pixel``, so every
  threshold returned here (``f1_max``, ``threshold_at_frr``) is meant to be used with
  ``>``, and every function that takes a threshold (``f1_at_threshold``,
  ``precision_recall_at_threshold``) applies ``>``.
  The one exception is ``roc_curve``, whose ``thresholds`` follow the usual ROC reporting
  convention (the point is reached by ``score >= thresholds[k]``); see its docstring.
* Ties are handled exactly: samples with equal scores always fall on the same side of any
  threshold, so a curve never has a point that separates them.
"""

from __future__ import annotations

import numpy as np
import cv2

__all__ = [
    "roc_curve",
    "roc_auc",
    "pixel_auroc",
    "aupro",
    "pro_curve",
    "f1_max",
    "f1_at_threshold",
    "precision_recall_at_threshold",
    "threshold_at_frr",
    "allowed_exceedances",
    "score_statistics",
]

# Positives are searched into negatives (or the reverse) in blocks of this many, so the two
# int64 index arrays stay at a few tens of MB even when a defect covers millions of pixels.
_SEARCH_BLOCK = 1 << 22


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _check_binary(a: np.ndarray, what: str) -> np.ndarray:
    """Return ``a`` as a bool array, refusing anything that is not 0/1.

    Being strict catches masks that were resized with interpolation (values like 0.5) or
    stored as 0/255, which a silent ``!= 0`` would turn into wrong ground truth.
    """
    if a.dtype == np.bool_:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{what} must be bool or numeric 0/1, got dtype {a.dtype}")
    if a.size and np.any((a != 0) & (a != 1)):
        raise ValueError(f"{what} must contain only 0 and 1 (1 = anomalous); "
                         f"found other values such as {a[(a != 0) & (a != 1)].flat[0]!r}")
    return a != 0


def _check_scores(s: np.ndarray, what: str) -> None:
    if not (np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
        raise ValueError(f"{what} must be numeric, got dtype {s.dtype}")
    # NaN has no place in a ranking: it would silently sort to one end and bias the result.
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise ValueError(f"{what} contain NaN")


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D labels/scores pair; return (bool labels, float64 scores)."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("labels and scores are empty")
    y = _check_binary(y, "labels")
    _check_scores(s, "scores")
    # float64 holds every float32/float16 value exactly, so converting cannot create ties.
    return y, s.astype(np.float64, copy=False)


def _both_classes(y: np.ndarray) -> tuple[int, int]:
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"both classes are needed (got {n_pos} anomalous and {n_neg} normal samples): "
            "the ROC is undefined with only one class")
    return n_pos, n_neg


def _masks_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Validate [N,H,W] (or one [H,W]) masks and maps; return (bool masks, maps)."""
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.shape != a.shape:
        raise ValueError(f"masks and maps differ in shape: {m.shape} != {a.shape}")
    if m.ndim == 2:
        m, a = m[None], a[None]
    if m.ndim != 3:
        raise ValueError(f"masks and maps must be [N,H,W] (or one [H,W]), got shape {m.shape}")
    if m.size == 0:
        raise ValueError("masks and maps are empty")
    m = _check_binary(m, "masks")
    _check_scores(a, "maps")
    return m, a


# ---------------------------------------------------------------------------------------
# ROC
# ---------------------------------------------------------------------------------------


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve, one point per distinct score.

    Returns ``(fpr, tpr, thresholds)``, each of length ``1 + number of distinct scores``,
    ordered by increasing ``fpr``/``tpr``. The first point is always ``(0, 0)`` with
    threshold ``+inf`` (nothing flagged). Point ``k`` is the operating point reached by
    flagging every sample with ``score >= thresholds[k]`` (``thresholds`` are the distinct
    scores, descending). Samples with tied scores enter together, so a tie between a normal
    and an anomalous sample gives one diagonal segment, exactly as the Mann-Whitney
    convention of :func:`roc_auc` counts it (the trapezoid area of this curve equals
    ``roc_auc``).

    With the runtime's ``score > t`` rule, point ``k`` is reached by any ``t`` in
    ``[thresholds[k+1], thresholds[k])`` (any ``t < thresholds[k]`` for the last point).

    Raises ValueError if only one class is present, lengths differ, or scores contain NaN.
    """
    y, s = _labels_scores(labels, scores)
    n_pos, n_neg = _both_classes(y)
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    tps_all = np.cumsum(y[order], dtype=np.int64)
    # The last index of each run of equal scores is the only place a threshold can fall.
    ends = np.r_[np.flatnonzero(s_desc[1:] != s_desc[:-1]), s_desc.size - 1]
    tps = tps_all[ends]
    fps = (ends + 1) - tps
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s_desc[ends]]
    return fpr, tpr, thresholds


def _twice_u(pos_sorted: np.ndarray, neg_sorted: np.ndarray) -> int:
    """Return ``2*U``: twice the number of (positive, negative) pairs ranked correctly,
    with each tied pair counting 1 (i.e. 1/2 in U).

    This is the Mann-Whitney U statistic with average ranks, computed by binary search of
    one sorted class into the other instead of ranking the union: same number, but it never
    needs an argsort or a rank array of all samples, which is what keeps 30 M pixels cheap.
    Working in integers (2*U) keeps the result exact; the largest value, 2*n_pos*n_neg,
    fits int64 for any realistic pixel count.
    """
    n_pos, n_neg = pos_sorted.size, neg_sorted.size
    # Searching the smaller class into the larger keeps the index arrays small.
    if n_pos <= n_neg:
        queries, table = pos_sorted, neg_sorted
    else:
        queries, table = neg_sorted, pos_sorted
    acc = 0
    for i in range(0, queries.size, _SEARCH_BLOCK):
        q = queries[i:i + _SEARCH_BLOCK]
        # below + at_or_below = 2*(#table < q) + (#table == q)
        acc += int(np.searchsorted(table, q, side="left").sum(dtype=np.int64))
        acc += int(np.searchsorted(table, q, side="right").sum(dtype=np.int64))
    if n_pos <= n_neg:
        return acc
    # acc counted pairs where the negative wins (plus ties); the rest of 2*n_pos*n_neg is ours.
    return 2 * n_pos * n_neg - acc


def roc_auc(labels, scores) -> float:
    """Exact area under the ROC curve.

    AUROC = P(score of a random anomalous sample > score of a random normal sample), with
    ties counting 1/2. This is the Mann-Whitney U statistic with average ranks divided by
    ``n_pos * n_neg``, and equals the trapezoid area under :func:`roc_curve`. It depends
    only on the ordering of scores, not on any threshold.

    Raises ValueError if only one class is present, lengths differ, or scores contain NaN.
    """
    y, s = _labels_scores(labels, scores)
    n_pos, n_neg = _both_classes(y)
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    return _twice_u(pos, neg) / (2.0 * n_pos * n_neg)


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC: :func:`roc_auc` over every pixel of every image.

    ``masks``: bool or 0/1 array ``[N,H,W]`` (1 = defect pixel); ``maps``: anomaly maps of
    the same shape, higher = more anomalous. A single ``[H,W]`` pair is also accepted.

    Built for large evaluation sets (tens of millions of pixels): the map keeps its own
    dtype (float32 stays float32, so memory is about 2x the map, not 8x), and the two
    classes are sorted separately and compared by binary search rather than ranking all
    pixels together. The result is identical to ``roc_auc(masks.ravel(), maps.ravel())``.

    Raises ValueError if all pixels are of one class, shapes differ, or maps contain NaN.
    """
    m, a = _masks_maps(masks, maps)
    m = m.ravel()
    a = a.ravel()
    n_pos = int(np.count_nonzero(m))
    n_neg = int(m.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"both defect and normal pixels are needed (got {n_pos} defect, {n_neg} normal)")
    pos = a[m]
    pos.sort()
    neg = a[~m]
    neg.sort()
    return _twice_u(pos, neg) / (2.0 * n_pos * n_neg)


# ---------------------------------------------------------------------------------------
# AUPRO
# ---------------------------------------------------------------------------------------


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve (:func:`pro_curve`) up to ``fpr_limit``, divided by ``fpr_limit``.

    The MVTec AD / CFLOW-AD segmentation metric. Unlike pixel AUROC, it weights every
    defect equally regardless of its size, so a model cannot score well by finding only the
    large defects.

    * Ground-truth regions are the 8-connected components of each image's mask
      (``cv2.connectedComponents``, connectivity 8); components never span images.
    * For a threshold ``t``: ``PRO(t)`` is the mean, over all regions of all images, of the
      fraction of the region's pixels with ``map > t``; ``FPR(t)`` is the fraction of
      pixels outside every mask with ``map > t``.
    * The curve is exact: it is the one obtained by sweeping every pixel once in
      descending score order, where each region pixel adds ``1/(n_regions*region_size)``
      to PRO and each normal pixel adds ``1/n_normal`` to FPR, and a point is emitted only
      when the score changes (so tied pixels enter together and give a straight segment).
    * ``PRO`` is integrated over ``FPR`` from 0 to ``fpr_limit`` with the trapezoid rule,
      interpolating linearly at ``fpr_limit``, and divided by ``fpr_limit``, so a map that
      ranks every region pixel above every normal pixel scores 1.0.

    Implementation: a step adding only region pixels is vertical (no area), so the curve is
    needed only at the distinct *normal* scores; PRO there is read by binary search into
    the sorted region pixels: the full sweep's number without an argsort of every pixel.

    ``masks``/``maps``: ``[N,H,W]`` (or one ``[H,W]``), masks bool or 0/1.
    Raises ValueError when there are no regions, no normal pixels, ``fpr_limit`` is not in
    ``(0, 1]``, shapes differ, or maps contain NaN.
    """
    fpr, pro = pro_curve(masks, maps, fpr_limit)
    return float(np.sum(np.diff(fpr) * (pro[1:] + pro[:-1]) * 0.5)) / fpr_limit


def pro_curve(masks, maps, fpr_limit: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve :func:`aupro` integrates (defined there), FPR 0 to ``fpr_limit``:
    (fpr, pro), float64, fpr non-decreasing; equal consecutive fpr = a region-only step;
    the last point interpolated at ``fpr_limit``. Same arguments and errors as aupro."""
    if not (0.0 < fpr_limit <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    m, a = _masks_maps(masks, maps)

    region_scores = []
    region_inv_size = []
    n_regions = 0
    for mask_i, map_i in zip(m, a):
        if not mask_i.any():
            continue
        n_cc, cc = cv2.connectedComponents(mask_i.astype(np.uint8), connectivity=8)
        sizes = np.bincount(cc.ravel(), minlength=n_cc)
        in_region = cc > 0
        region_scores.append(map_i[in_region])
        region_inv_size.append(1.0 / sizes[cc[in_region]])
        n_regions += n_cc - 1
    if n_regions == 0:
        raise ValueError("aupro needs at least one defect region; every mask is empty")

    neg = a[~m]
    n_normal = neg.size
    if n_normal == 0:
        raise ValueError("aupro needs normal pixels; every pixel is inside a mask")
    neg.sort()

    r_scores = np.concatenate(region_scores)
    order = np.argsort(r_scores, kind="stable")
    r_scores = r_scores[order]
    w = np.concatenate(region_inv_size)[order] / n_regions
    # suffix[i] = PRO contributed by region pixels r_scores[i:]. Summing from the top end
    # (not total - prefix) avoids cancellation for the small PRO values at low FPR.
    suffix = np.zeros(w.size + 1)
    suffix[:-1] = np.cumsum(w[::-1])[::-1]

    # Distinct normal scores, descending, with how many normal pixels sit at each.
    starts = np.r_[0, np.flatnonzero(neg[1:] != neg[:-1]) + 1]
    values = neg[starts][::-1]
    counts = np.diff(np.r_[starts, n_normal])[::-1]
    fpr_hi = np.cumsum(counts, dtype=np.int64) / n_normal

    # Only steps up to the first one reaching fpr_limit matter; the rest are skipped to
    # save memory and time at the default limit of 0.3.
    j = int(np.searchsorted(fpr_hi, fpr_limit, side="left"))
    j = min(j, values.size - 1)  # guards float round-off when fpr_limit == 1
    values = values[:j + 1]
    fpr_hi = fpr_hi[:j + 1]
    fpr_lo = np.r_[0.0, fpr_hi[:-1]]
    # Step k goes from (fpr_lo, PRO with map > v_k) to (fpr_hi, PRO with map >= v_k).
    pro_lo = suffix[np.searchsorted(r_scores, values, side="right")]
    pro_hi = suffix[np.searchsorted(r_scores, values, side="left")]

    f0, f1, p0, p1 = fpr_lo[-1], fpr_hi[-1], pro_lo[-1], pro_hi[-1]
    if f1 > fpr_limit:  # the last step crosses the limit: end the curve on it
        pro_hi[-1] = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
        fpr_hi[-1] = fpr_limit
    return np.column_stack([fpr_lo, fpr_hi]).ravel(), np.column_stack([pro_lo, pro_hi]).ravel()


# ---------------------------------------------------------------------------------------
# Thresholded metrics (decision rule: score > threshold)
# ---------------------------------------------------------------------------------------


def _confusion(labels, scores, threshold: float) -> tuple[int, int, int]:
    y, s = _labels_scores(labels, scores)
    if not np.count_nonzero(y):
        raise ValueError("at least one anomalous (label 1) sample is needed: "
                         "recall and F1 are undefined without positives")
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    pred = s > threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    return tp, fp, fn


def f1_max(labels, scores) -> tuple[float, float]:
    """Best F1 over all thresholds, and a threshold that achieves it with ``score > t``.

    Every distinct score ``s_k`` defines one candidate operating point, "flag every sample
    scoring ``>= s_k``" (flagging nothing has F1 = 0 and never wins). The best one is
    returned as a threshold for the runtime's strict rule ``score > t``: the midpoint
    between ``s_k`` and the next lower distinct score, so the decision has margin on both
    sides (falls back to the next lower score itself if the midpoint rounds onto ``s_k``).
    If ``s_k`` is the lowest score, the threshold is the float just below it. Hence
    ``f1_at_threshold(labels, scores, t) == best_f1`` always holds.

    When several operating points tie for the best F1, the highest threshold (fewest
    flagged samples) is returned.

    Raises ValueError without any anomalous sample, on length mismatch, or NaN scores.
    """
    y, s = _labels_scores(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError("at least one anomalous (label 1) sample is needed: F1 is undefined")
    order = np.argsort(-s, kind="stable")
    s_desc = s[order]
    tps_all = np.cumsum(y[order], dtype=np.int64)
    ends = np.r_[np.flatnonzero(s_desc[1:] != s_desc[:-1]), s_desc.size - 1]
    tp = tps_all[ends]
    flagged = ends + 1
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (flagged + n_pos)
    f1 = 2.0 * tp / (flagged + n_pos)
    k = int(np.argmax(f1))  # first maximum = highest threshold
    chosen = s_desc[ends[k]]
    if k + 1 < ends.size:
        lower = s_desc[ends[k + 1]]
        mid = 0.5 * (chosen + lower)
        threshold = mid if lower <= mid < chosen else lower
    else:
        threshold = np.nextafter(chosen, -np.inf)
    return float(f1[k]), float(threshold)


def f1_at_threshold(labels, scores, threshold: float) -> float:
    """F1 of the decision ``score > threshold`` (strictly greater, as in the runtime).

    F1 = 2TP / (2TP + FP + FN). A sample scoring exactly ``threshold`` is normal.
    Raises ValueError without any anomalous sample, on length mismatch, or NaN.
    """
    tp, fp, fn = _confusion(labels, scores, threshold)
    return 2.0 * tp / (2 * tp + fp + fn)


def precision_recall_at_threshold(labels, scores, threshold: float) -> tuple[float, float]:
    """``(precision, recall)`` of the decision ``score > threshold`` (strictly greater).

    Precision = TP / (TP + FP), recall = TP / (TP + FN). When nothing is flagged, precision
    is 0/0 and is reported as 0.0 (the scikit-learn convention), which keeps it consistent
    with F1 = 0 there. Raises ValueError without any anomalous sample (recall undefined),
    on length mismatch, or NaN.
    """
    tp, fp, fn = _confusion(labels, scores, threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    return float(precision), float(recall)


def threshold_at_frr(normal_scores, target_frr: float) -> float:
    """Lowest threshold that rejects at most ``target_frr`` of the given normal scores.

    Returns the smallest ``t`` such that ``mean(normal_scores > t) <= target_frr``, for the
    runtime rule ``score > t`` -> rejected. With ``n`` scores, at most
    ``k = floor(target_frr * n)`` may lie above ``t``, and the smallest such ``t`` is the
    ``(n-k)``-th smallest score itself (a value of the data; the scores equal to it are
    accepted). Ties can only lower the false-reject rate below the target. Going lower
    than the returned value would reject more than ``k`` normals, so this is the most
    sensitive threshold that meets the false-reject budget *on these normals*; on new
    normals the rate is only an estimate, and it is coarse when ``n`` is small
    (``target_frr < 1/n`` means ``t = max(normal_scores)``).

    Raises ValueError on empty input, NaN scores, or ``target_frr`` outside ``[0, 1)``.
    """
    s = np.asarray(normal_scores)
    if s.size == 0:
        raise ValueError("normal_scores is empty")
    _check_scores(s, "normal_scores")
    if not (0.0 <= target_frr < 1.0):  # also rejects NaN
        raise ValueError(f"target_frr must be in [0, 1), got {target_frr!r}")
    s = np.sort(s.ravel().astype(np.float64, copy=False))
    n = s.size
    return float(s[n - allowed_exceedances(n, target_frr) - 1])


def allowed_exceedances(n: int, target_frr: float) -> int:
    """k = floor(target_frr * n): how many of n normals may lie above a threshold that
    rejects at most ``target_frr`` of them (``threshold_at_frr`` keeps exactly that many above)."""
    # floor(target*n) in floats can be off by one (0.29*100 = 28.999...), so settle k by
    # checking the defining inequality k/n <= target directly.
    k = int(np.floor(target_frr * n))
    while (k + 1) / n <= target_frr:
        k += 1
    while k > 0 and k / n > target_frr:
        k -= 1
    return min(k, n - 1)


def score_statistics(scores) -> dict[str, float]:
    """Summary of normal images' scores, stored in the model's metadata (``score_stats``)
    and used for the operators' 0-1 normalized score."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0 or np.isnan(s).any():
        raise ValueError("score_statistics needs at least one score and no NaN")
    return {
        "count": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        "min": float(s.min()),
        "max": float(s.max()),
        "p50": float(np.percentile(s, 50)),
        "p99": float(np.percentile(s, 99)),
    }

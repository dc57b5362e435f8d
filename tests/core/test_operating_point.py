"""Thresholds that hold on new normals (ffcore.operating_point), checked against score
populations whose true false-reject rate at any threshold is known in closed form here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ffcore.operating_point import (
    MIN_MODEL_NORMALS,
    OperatingPoint,
    ThresholdMethod,
    normals_for_target,
    operating_point,
    order_statistic_frr_interval,
)

TARGET = 0.02
SEEDS = 200


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


# name -> (draw n scores, P(score > t)): the true false-reject rate of threshold t.
FAMILIES = {
    "normal": (lambda r, n: r.normal(5.0, 1.0, n), lambda t: _normal_sf(t - 5.0)),
    "log-normal": (lambda r, n: np.exp(r.normal(0.0, 0.5, n)), lambda t: _normal_sf(math.log(t) / 0.5) if t > 0 else 1.0),
    "gamma(2)": (lambda r, n: r.gamma(2.0, 1.0, n), lambda t: math.exp(-t) * (1.0 + t) if t > 0 else 1.0),
    "log-logistic(4)": (lambda r, n: (lambda u: (u / (1.0 - u)) ** 0.25)(r.random(n)),
                        lambda t: 1.0 / (1.0 + t ** 4) if t > 0 else 1.0),
}


def _runs(family: str, n: int) -> list[tuple[OperatingPoint, float]]:
    draw, survival = FAMILIES[family]
    out = []
    for seed in range(SEEDS):
        point = operating_point(draw(np.random.default_rng(seed), n), TARGET)
        out.append((point, survival(point.threshold)))
    return out


def _held(runs) -> float:
    return float(np.mean([TARGET / 2 <= rate <= 2 * TARGET for _, rate in runs]))


def _covered(runs) -> float:
    return float(np.mean([p.frr_low <= rate <= p.frr_high for p, rate in runs]))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_true_rate_holds_within_half_to_double_the_target(family):
    # 300 normals: within [1%, 4%] in at least 90% of seeds. 100 normals: no estimator reaches
    # 90% (a normal fit of normal scores, the best possible there, gets about 85%), so the
    # bound asserted is what the tail model reaches, well above the old order statistic's ~65%.
    at_300, at_100 = _runs(family, 300), _runs(family, 100)
    assert _held(at_300) >= 0.90, _held(at_300)
    assert _held(at_100) >= 0.72, _held(at_100)
    # The reported interval holds the true rate about as often as it claims (95%).
    assert _covered(at_300) >= 0.90 and _covered(at_100) >= 0.90, (_covered(at_300), _covered(at_100))
    assert {p.method for p, _ in at_300 + at_100} == {ThresholdMethod.TAIL_MODEL}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_thirty_normals_are_honest_about_their_uncertainty(family):
    # With 30 normals at 2% the rate cannot be pinned to [1%, 4%] (about 55% of seeds): what
    # is promised is an interval that holds the true rate and the count still needed.
    runs = _runs(family, 30)
    assert _covered(runs) >= 0.88, _covered(runs)
    assert all(p.needed_more == 470 and p.frr_high > 2 * TARGET for p, _ in runs)
    assert 0.40 <= _held(runs) <= 0.75, _held(runs)  # measured, not a promise: see docs


def test_enough_normals_give_the_old_order_statistic_with_its_exact_interval():
    x = np.random.default_rng(1).normal(size=1000)
    point = operating_point(x, TARGET)
    # k = 20 of 1000 may lie above: the 21st largest score.
    assert point.threshold == np.sort(x)[-21]
    assert point.method is ThresholdMethod.ORDER_STATISTIC and point.needed_more is None
    assert np.count_nonzero(x > point.threshold) == 20
    # Its true rate is Beta(k + 1, n - k) distributed whatever the scores: compare with draws.
    draws = np.random.default_rng(2).beta(21, 980, 10**6)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    assert point.frr_low == pytest.approx(lo, rel=5e-3) and point.frr_high == pytest.approx(hi, rel=5e-3)


def test_order_statistic_interval_holds_the_true_rate_at_its_nominal_rate():
    hits = 0
    for seed in range(400):
        x = np.random.default_rng(seed).normal(size=600)
        point = operating_point(x, TARGET)
        hits += point.frr_low <= _normal_sf(point.threshold) <= point.frr_high
    assert 0.92 <= hits / 400 <= 0.98, hits / 400


def test_minimum_count_is_where_the_exact_interval_fits_half_to_double():
    assert normals_for_target(TARGET) == 500
    rng = np.random.default_rng(3)
    # 500 normals (k = 10): the exact interval lies inside [1%, 4%]; 499 (k = 9) does not.
    lo, hi = np.quantile(rng.beta(11, 490, 10**6), [0.025, 0.975])
    assert lo >= TARGET / 2 and hi <= 2 * TARGET
    lo, _ = np.quantile(rng.beta(10, 490, 10**6), [0.025, 0.975])
    assert lo < TARGET / 2
    assert order_statistic_frr_interval(499, 9)[0] < TARGET / 2
    assert operating_point(rng.normal(size=499), TARGET).needed_more == 1
    assert operating_point(rng.normal(size=500), TARGET).needed_more is None


def test_few_normals_get_the_largest_score_and_its_interval():
    x = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert len(x) < MIN_MODEL_NORMALS
    point = operating_point(x, TARGET)
    assert point.threshold == 5.0 and point.method is ThresholdMethod.LARGEST_SCORE
    # The maximum of 5 has a Beta(1, 5) rate: 1 - (1 - q) ** (1 / 5) at quantile q.
    assert point.frr_low == pytest.approx(1 - 0.975 ** 0.2, rel=1e-6)
    assert point.frr_high == pytest.approx(1 - 0.025 ** 0.2, rel=1e-6)
    assert point.needed_more == 495
    same = operating_point(np.full(20, 2.5), TARGET)  # no spread: nothing to fit
    assert same.threshold == 2.5 and same.method is ThresholdMethod.LARGEST_SCORE


def test_tail_model_is_scale_equivariant_and_independent_of_order():
    x = np.random.default_rng(4).gamma(2.0, 1.0, 80)
    a = operating_point(x, TARGET)
    b = operating_point(1000.0 * x[::-1], TARGET)
    assert b.threshold == pytest.approx(1000.0 * a.threshold, rel=1e-9)
    assert (b.frr_low, b.frr_high) == pytest.approx((a.frr_low, a.frr_high), rel=1e-9)
    assert a.threshold > np.quantile(x, 0.9)


def test_summary_is_one_line_with_interval_and_count_needed():
    short = operating_point(np.random.default_rng(5).normal(10.0, 1.0, 26), TARGET)
    line = short.summary()
    assert "\n" not in line and "26 normals" in line and "tail model" in line
    assert f"{short.frr_low:.3g}-{short.frr_high:.3g}" in line and "474 more good parts" in line
    enough = operating_point(np.random.default_rng(5).normal(10.0, 1.0, 600), TARGET).summary()
    assert "order statistic" in enough and "more good parts" not in enough
    assert OperatingPoint.from_dict(short.to_dict()) == short


@pytest.mark.parametrize("scores, target, message", [
    ([], TARGET, "no normal scores"),
    ([1.0, float("nan"), 2.0], TARGET, "1 normal scores are NaN or infinite"),
    ([1.0, float("inf")], TARGET, "NaN or infinite"),
    (["a", "b"], TARGET, "must be numbers"),
    ([1.0, 2.0], 0.0, r"in \(0, 1\)"),
    ([1.0, 2.0], 1.0, r"in \(0, 1\)"),
    ([1.0, 2.0], -0.1, r"in \(0, 1\)"),
    ([1.0, 2.0], float("nan"), r"in \(0, 1\)"),
])
def test_bad_input_gets_one_clear_error(scores, target, message):
    with pytest.raises(ValueError, match=message):
        operating_point(scores, target)

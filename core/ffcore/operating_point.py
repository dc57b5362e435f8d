"""A decision threshold that holds on NEW normal parts, from a handful of scored normals.

The stored rule is ``score > threshold -> reject``; the quantity that matters on the line is
the threshold's TRUE false-reject rate ``P(score of a new normal > threshold)``, not the
share of the calibration normals above it. ``operating_point(scores, target)`` chooses the
threshold by one of three methods and says how sure it is:

* **order statistic** (``n >= normals_for_target(target)``): the old rule
  (``ffcore.metrics.threshold_at_frr``: at most ``k = floor(n * target)`` calibration normals
  above it). Its true rate needs no model: for continuous scores it is exactly
  ``Beta(k + 1, n - k)`` distributed, whatever the score distribution, so the confidence
  interval is exact. The branch starts at the smallest ``n`` from which that interval (at
  ``CONFIDENCE``) lies within ``[target / 2, 2 * target]`` for every larger ``n``: about
  10 expected exceedances (500 normals at 2%). Below it an order statistic is a coin toss
  (with 26 normals at 2% it is the largest score).
* **tail model** (fewer normals): a Box-Cox transform with its exponent fitted by maximum
  likelihood removes the skew of the scores (log-normal, gamma and normal shapes all
  become close to normal), a normal distribution is fitted in that space and the threshold
  is its ``1 - target`` quantile, transformed back. On every shape tried (normal,
  log-normal, gamma, log-logistic, Weibull, exponential) it came within a few points of
  the ideal fit of that shape, where a plain normal or log-normal fit fails off its own
  family (benchmarks/threshold_holdout.py); a generalized Pareto fit of the top 20% was
  worse at 100 normals on every shape. The interval is a parametric
  bootstrap of the whole fit (exponent included), so it widens with fewer normals but
  cannot see a wrong model.
* **largest score** (fewer than ``MIN_MODEL_NORMALS``, or no spread to fit): the maximum,
  with the exact ``Beta(1, n)`` interval.

Below ``normals_for_target`` the result also says how many more good parts the order
statistic needs (``needed_more``). With few normals no estimator can be sure: at 2% and 30
normals even a normal fit of normal scores lands within [1%, 4%] only about 57% of the time.

numpy and the standard library only (no scipy): the binomial tail is summed here.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np

from .metrics import allowed_exceedances, threshold_at_frr

__all__ = ["CONFIDENCE", "MIN_MODEL_NORMALS", "THRESHOLD_METHODS", "OperatingPoint", "ThresholdMethod", "normals_for_target",
           "operating_point", "order_statistic_frr_interval"]

#: Two-sided confidence of the reported false-reject interval.
CONFIDENCE = 0.95
#: Fewer normals than this are not modelled: three parameters (exponent, mean, spread) need more.
MIN_MODEL_NORMALS = 8
#: Parametric bootstrap resamples of the tail model (fixed seed: the same scores give the same interval).
BOOTSTRAP = 400
_BOOTSTRAP_SEED = 0
# The Box-Cox exponent is searched on a coarse grid, then refined around the best point.
# Beyond [-2, 3] the transform changes the tail little and overflows sooner.
_COARSE = np.linspace(-2.0, 3.0, 11)
_FINE_HALF_WIDTH, _FINE_POINTS = 0.25, 11
_CHUNK = 50


class ThresholdMethod(str, enum.Enum):
    ORDER_STATISTIC = "order_statistic"
    TAIL_MODEL = "tail_model"
    LARGEST_SCORE = "largest_score"


THRESHOLD_METHODS = tuple(m.value for m in ThresholdMethod)


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what is known about its true false-reject rate on new normals."""

    threshold: float
    method: ThresholdMethod
    n: int
    target_frr: float
    frr_low: float
    frr_high: float
    needed_more: int | None  # more normals for the order statistic's interval to fit [target/2, 2*target]
    confidence: float = CONFIDENCE

    def summary(self) -> str:
        short = (f"; {self.needed_more} more good parts for a {100 * self.confidence:g}% interval within "
                 f"[{self.target_frr / 2:.3g}, {2 * self.target_frr:.3g}]" if self.needed_more else "")
        return (f"threshold {self.threshold:.6g} by {self.method.value.replace('_', ' ')} on {self.n} normals: "
                f"false-reject rate on new normals {self.frr_low:.3g}-{self.frr_high:.3g} "
                f"({100 * self.confidence:g}% interval, target {self.target_frr:g}){short}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["method"] = self.method.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "OperatingPoint":
        return cls(**{**d, "method": ThresholdMethod(d["method"])})


def operating_point(normal_scores, target_frr: float) -> OperatingPoint:
    """The threshold for ``score > threshold -> reject`` whose false-reject rate on new
    normals is ``target_frr``, chosen as the module docstring says. ValueError on empty
    input, non-finite scores or ``target_frr`` outside (0, 1)."""
    x = _check(normal_scores, target_frr)
    n = x.size
    needed = normals_for_target(target_frr)
    if n >= needed:
        k = allowed_exceedances(n, target_frr)
        low, high = order_statistic_frr_interval(n, k)
        return OperatingPoint(threshold_at_frr(x, target_frr), ThresholdMethod.ORDER_STATISTIC, n, target_frr,
                              low, high, None)
    fitted = _fit_tail(x, target_frr) if n >= MIN_MODEL_NORMALS else None
    if fitted is None:
        low, high = order_statistic_frr_interval(n, 0)
        return OperatingPoint(float(x.max()), ThresholdMethod.LARGEST_SCORE, n, target_frr, low, high, needed - n)
    threshold, (low, high) = fitted
    return OperatingPoint(threshold, ThresholdMethod.TAIL_MODEL, n, target_frr, low, high, needed - n)


def _check(normal_scores, target_frr: float) -> np.ndarray:
    x = np.asarray(normal_scores)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"normal scores must be numbers, got {x.dtype} values")
    x = x.astype(np.float64).ravel()
    if x.size == 0:
        raise ValueError("no normal scores: score good parts first, a threshold is set on them")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{int(np.count_nonzero(~np.isfinite(x)))} normal scores are NaN or infinite: "
                         "the model's output is broken, fix it before setting thresholds")
    if not isinstance(target_frr, (int, float)) or isinstance(target_frr, bool) or not (0.0 < target_frr < 1.0):
        raise ValueError(f"target false-reject rate must be a number in (0, 1), got {target_frr!r}")  # NaN too
    return x


# ---------------------------------------------------------------------------------------
# The order statistic: exact distribution of its false-reject rate
# ---------------------------------------------------------------------------------------


def _frr_cdf(x: float, n: int, k: int) -> float:
    """P(true FRR <= x) for the threshold with k of n normals above it: Beta(k+1, n-k) at x,
    which equals P(Binomial(n, x) >= k + 1)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lx, l1x = math.log(x), math.log1p(-x)
    below = sum(math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lx + (n - j) * l1x)
                for j in range(k + 1))
    return min(1.0, max(0.0, 1.0 - below))


def _frr_quantile(q: float, n: int, k: int) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _frr_cdf(mid, n, k) < q else (lo, mid)
    return 0.5 * (lo + hi)


@lru_cache(maxsize=4096)
def order_statistic_frr_interval(n: int, k: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact equal-tailed interval of the true false-reject rate of the threshold that has
    ``k`` of ``n`` continuous normal scores above it (any score distribution)."""
    tail = (1.0 - confidence) / 2
    return _frr_quantile(tail, n, k), _frr_quantile(1.0 - tail, n, k)


@lru_cache(maxsize=256)
def normals_for_target(target_frr: float, confidence: float = CONFIDENCE) -> int:
    """The smallest n from which the order statistic's exact interval lies within
    [target/2, 2*target] for every larger n.

    Counts n sharing one k form a block; within it the rate falls as n grows, so the block
    holds iff its first n meets the upper bound and its last n the lower one. The bound is
    met for good once it holds for a run of blocks (the relative width only shrinks with k).
    """
    if not (0.0 < target_frr < 1.0):
        raise ValueError(f"target false-reject rate must be in (0, 1), got {target_frr!r}")
    start, held = None, 0
    n = 1
    while held < 6:
        k = allowed_exceedances(n, target_frr)
        last = max(n, math.ceil((k + 1) / target_frr) - 2)  # the block's end, then settled exactly
        while allowed_exceedances(last + 1, target_frr) == k:
            last += 1
        while allowed_exceedances(last, target_frr) != k:
            last -= 1
        ok = (order_statistic_frr_interval(n, k, confidence)[1] <= 2 * target_frr
              and order_statistic_frr_interval(last, k, confidence)[0] >= target_frr / 2)
        if ok:
            start, held = (n if start is None else start), held + 1
        else:
            start, held = None, 0
        n = last + 1
    return start


# ---------------------------------------------------------------------------------------
# The tail model: Box-Cox to near-normal, normal quantile, parametric bootstrap
# ---------------------------------------------------------------------------------------


def _normal_survival(z: np.ndarray) -> np.ndarray:
    return 0.5 * np.vectorize(math.erfc, otypes=[float])(np.asarray(z) / math.sqrt(2))


def _best_exponent(logx: np.ndarray) -> np.ndarray:
    """Maximum-likelihood Box-Cox exponent of each row of log x ([B, n] -> [B])."""
    n = logx.shape[-1]

    def loglik(lam_rows: np.ndarray) -> np.ndarray:  # lam_rows [B, G] -> [B, G]
        lg = logx[:, None, :]
        lm = lam_rows[:, :, None]
        small = np.abs(lm) < 1e-8
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.where(small, lg, np.expm1(lm * lg) / np.where(small, 1.0, lm))
            ll = -0.5 * n * np.log(y.var(axis=-1)) + (lam_rows - 1.0) * logx.sum(-1)[:, None]
        return np.where(np.isfinite(ll), ll, -np.inf)

    coarse = np.broadcast_to(_COARSE, (logx.shape[0], _COARSE.size))
    best = coarse[np.arange(logx.shape[0]), np.argmax(loglik(coarse), axis=1)]
    fine = best[:, None] + np.linspace(-_FINE_HALF_WIDTH, _FINE_HALF_WIDTH, _FINE_POINTS)[None, :]
    return fine[np.arange(logx.shape[0]), np.argmax(loglik(fine), axis=1)]


def _transform(logx: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Row-wise Box-Cox: logx [B, n], lam [B] -> [B, n]."""
    lm = lam[:, None]
    small = np.abs(lm) < 1e-8
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(small, logx, np.expm1(lm * logx) / np.where(small, 1.0, lm))


def _untransform(y: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Inverse Box-Cox, row-wise; inf where y lies beyond the transform's range (lam < 0)."""
    lam = lam.reshape(lam.shape + (1,) * (y.ndim - lam.ndim))
    small = np.abs(lam) < 1e-8
    base = 1.0 + np.where(small, 0.0, lam) * y
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = np.where(small, np.exp(y), np.where(base > 0, np.abs(base) ** (1.0 / np.where(small, 1.0, lam)), np.nan))
    return np.where(np.isnan(out), np.where(lam < 0, np.inf, 0.0), out)


def _fit(logx: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(exponent, mean, sd, threshold) per row of log x."""
    lam = _best_exponent(logx)
    y = _transform(logx, lam)
    mean, sd = y.mean(axis=1), y.std(axis=1, ddof=1)
    return lam, mean, sd, _untransform(mean + z * sd, lam)


def _fit_tail(x: np.ndarray, target_frr: float) -> tuple[float, tuple[float, float]] | None:
    """(threshold, CI of its false-reject rate) from the tail model, or None where it cannot
    be fitted (no spread, or its quantile beyond the fitted transform's range)."""
    span = float(np.ptp(x))
    if span <= 0.0:
        return None
    # Box-Cox needs positive values; a score of 0 or below is shifted to one n-th of the range.
    shift = 0.0 if x.min() > 0 else span / x.size - float(x.min())
    logx = np.log(x + shift)[None, :]
    z = NormalDist().inv_cdf(1.0 - target_frr)
    lam, mean, sd, threshold = _fit(logx, z)
    if not np.isfinite(threshold[0]) or threshold[0] - shift < 0:
        return None
    # Parametric bootstrap: samples of n from the fitted model, each refitted end to end;
    # the spread of the fitted model's rate at their thresholds is the threshold's uncertainty.
    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    rates = []
    for start in range(0, BOOTSTRAP, _CHUNK):
        rows = min(_CHUNK, BOOTSTRAP - start)
        y = mean[0] + sd[0] * rng.standard_normal((rows, x.size))
        xb = _untransform(y, np.full(rows, lam[0]))
        xb = np.clip(xb, np.finfo(float).tiny, np.finfo(float).max)
        tb = _fit(np.log(xb), z)[3]
        yb = _transform(np.log(np.clip(tb, np.finfo(float).tiny, np.finfo(float).max))[:, None], np.full(rows, lam[0]))
        rates.append(np.where(np.isfinite(tb), _normal_survival((yb[:, 0] - mean[0]) / sd[0]), 0.0))
    rates = np.concatenate(rates)
    tail = (1.0 - CONFIDENCE) / 2
    return float(threshold[0] - shift), (float(np.quantile(rates, tail)), float(np.quantile(rates, 1.0 - tail)))

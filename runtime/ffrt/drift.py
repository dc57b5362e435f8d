"""Has the line moved? Recent scores against the normal-score statistics stored in the model.

A model is calibrated on normal parts photographed one way. When the lamp ages, the camera
is refocused or the supplier changes, normal parts start to score differently long before
anyone notices more false rejects. :class:`DriftMonitor` keeps the last ``window`` scores
and compares two statistics with what calibration predicts, each against a bound derived
from the sampling error of *both* samples (the window's and the calibration set's, whose
size is ``score_stats.count``):

1. The recent median against the calibration median ``score_stats.p50``. The median of
   n scores has a standard deviation of about sqrt(pi/2) * std / sqrt(n) = 1.2533 * std /
   sqrt(n) (normal scores; for the right-skewed scores of a likelihood model the density
   at the median is higher and the true spread smaller, so the bound is conservative).
   Both medians carry that error, so the difference has

       sd = 1.2533 * score_stats.std * sqrt(1/n + 1/count)

   and the state is "drift" when ``|recent median - p50| > Z_SIGMAS * sd``.

2. The share of recent scores above the image threshold, when the threshold is the one
   calibrated at a target false-reject rate f on those ``count`` normals (the rule
   fftrain and ffcalib record as "target false-reject rate f" in ``thresholds.source``).
   Such a threshold is the (count-k)-th smallest calibration score, with k = floor(f *
   count), and whatever the score distribution the share of new normals above that order
   statistic is Beta(k+1, count-k) distributed (mean (k+1)/(count+1), not f: with 12
   calibration images and f = 0.02 the threshold is their maximum and about 1 normal in
   13 lies above it). The number above it in a window of n is then beta-binomial, and
   the state is "drift" when it exceeds the count whose upper tail probability is the
   one-sided normal tail of Z_SIGMAS. Distribution-free: no assumption on the scores'
   shape. Only an increase counts (with f = 1-2 % a decrease cannot be told from chance
   in a few hundred parts). A threshold set any other way (F1-optimal, by hand, or
   changed at run time) has no known expected share and this test is off.

Z_SIGMAS = 5: the state is re-evaluated after every call; at 10 parts/s around the clock
a window of 200 sees about 4,300 independent windows a day, and at 5 sigma (two-sided
false-alarm probability 5.7e-7 per window for the median, 2.9e-7 one-sided for the
share) a stable line raises a false alarm about once a year (less in practice: the
median bound is conservative for right-skewed scores), while with ~100 calibration images
a shift of the median by about 0.8 standard deviations of the normal scores is caught. Leaving "drift" needs the statistic back
inside ``EXIT_FRACTION`` of the bound, so a line sitting on the bound does not flap.

Scores are not images: a shift the model does not score differently (e.g. a darker image
that the backbone normalizes away) is not drift *for this model* and is not reported.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from ffcore.metrics import threshold_at_frr

from .errors import InvalidArgumentError
from .meta import ScoreStats

log = logging.getLogger("ffrt")

DEFAULT_DRIFT_WINDOW = 200
#: Fewer scores than this (or a window smaller than it) and no verdict is given.
MIN_SCORES = 30
Z_SIGMAS = 5.0
EXIT_FRACTION = 0.8
MEDIAN_SD_FACTOR = math.sqrt(math.pi / 2)  # 1.2533: sd of a sample median / (std / sqrt(n))
_FRR_IN_SOURCE = re.compile(r"target false-reject rate ([0-9][0-9.eE+-]*)")

OK, DRIFT, INSUFFICIENT = "ok", "drift", "insufficient_data"


@dataclass(frozen=True)
class Health:
    """Whether recent scores still look like the calibration normals (see ``ffrt.drift``).

    state:        "ok", "drift" or "insufficient_data".
    reason:       one sentence an operator can act on.
    window / count: capacity of the window and scores in it now.
    recent_median, calibration_median: median of the window, ``score_stats.p50``.
    median_bounds: (low, high): the recent median is "ok" inside them.
    share_above_threshold: fraction of the window with score > the image threshold.
    expected_share: what calibration predicts for that fraction ((k+1)/(count+1)); None
                  when the threshold was not set at a target false-reject rate.
    share_bound:  the largest fraction that is still "ok"; None when the test is off.
    """

    state: str
    reason: str
    window: int
    count: int
    recent_median: float | None
    calibration_median: float | None
    median_bounds: tuple[float, float] | None
    share_above_threshold: float | None
    expected_share: float | None
    share_bound: float | None
    threshold: float
    z_sigmas: float = Z_SIGMAS

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.median_bounds is not None:
            d["median_bounds"] = list(self.median_bounds)
        return d


def target_frr_from_source(source: str) -> float | None:
    """The target false-reject rate fftrain / ffcalib wrote into ``thresholds.source``
    ("... target false-reject rate 0.02 ..."), or None when the threshold came another way."""
    found = _FRR_IN_SOURCE.search(source or "")
    if found is None:
        return None
    try:
        f = float(found.group(1).rstrip("."))
    except ValueError:
        return None
    return f if 0.0 <= f < 1.0 else None


def rejects_allowed(target_frr: float, count: int) -> int:
    """k: how many of ``count`` calibration normals lie above a threshold set at
    ``target_frr``, by the calibration rule itself applied to ``count`` distinct scores."""
    ranks = np.arange(count, dtype=np.float64)
    return int(np.count_nonzero(ranks > threshold_at_frr(ranks, target_frr)))


@lru_cache(maxsize=64)
def share_limit(n: int, a: float, b: float, tail: float) -> int:
    """The largest count m such that, for X ~ BetaBinomial(n, a, b), P(X > m) > ``tail``
    does not hold, i.e. the smallest m with P(X > m) <= tail: counts above m are drift."""
    xs = range(n + 1)
    log_norm = math.lgamma(n + 1) - _lbeta(a, b)
    logp = np.array([log_norm - math.lgamma(x + 1) - math.lgamma(n - x + 1) + _lbeta(x + a, n - x + b) for x in xs])
    p = np.exp(logp - logp.max())
    p /= p.sum()
    above = np.cumsum(p[::-1])[::-1]  # above[x] = P(X >= x)
    for m in range(n + 1):
        if m + 1 > n or above[m + 1] <= tail:
            return m
    return n


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def check_window(window: object) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise InvalidArgumentError(f"drift_window must be a positive integer (scores), not {window!r}.")
    return int(window)


class DriftMonitor:
    """Thread-safe rolling window of scores with the two tests of this module.

    score_stats: the model's normal-score statistics (None, or std 0: no verdict, ever).
    threshold:   the image threshold in use.
    target_frr:  the false-reject rate that threshold was calibrated at, or None.
    """

    def __init__(
        self,
        score_stats: ScoreStats | None,
        threshold: float,
        target_frr: float | None,
        window: int = DEFAULT_DRIFT_WINDOW,
        z_sigmas: float = Z_SIGMAS,
    ) -> None:
        self._stats = score_stats if score_stats is not None and score_stats.std > 0 and score_stats.count > 0 else None
        self._window = check_window(window)
        self._z = float(z_sigmas)
        self._tail = 0.5 * math.erfc(self._z / math.sqrt(2))  # one-sided normal tail of z
        self._scores: deque[float] = deque(maxlen=self._window)
        self._lock = threading.Lock()
        self._state = INSUFFICIENT
        self.set_threshold(threshold, target_frr)

    def set_threshold(self, threshold: float, target_frr: float | None) -> None:
        beta = None
        if self._stats is not None and target_frr is not None:
            k = rejects_allowed(target_frr, self._stats.count)
            beta = (float(k + 1), float(self._stats.count - k))
        with self._lock:
            self._threshold, self._beta = float(threshold), beta

    def add(self, scores: Iterable[float]) -> None:
        # NaN (a broken measurement) counts as the highest score: it is anomalous.
        values = [math.inf if math.isnan(s) else float(s) for s in scores]
        if not values:
            return
        with self._lock:
            self._scores.extend(values)
            before = self._state
            health = self._evaluate()
            self._state = health.state
        if health.state != before and not (before == INSUFFICIENT and health.state == OK):
            if health.state == DRIFT:
                log.warning("ffrt: score drift: %s", health.reason)
            else:
                log.warning("ffrt: scores back to %s: %s", health.state, health.reason)

    def reset(self) -> None:
        with self._lock:
            self._scores.clear()
            self._state = INSUFFICIENT

    def health(self) -> Health:
        with self._lock:
            return self._evaluate()

    # -- the tests (called under the lock) -----------------------------------------------

    def _evaluate(self) -> Health:
        scores = np.fromiter(self._scores, np.float64, len(self._scores))
        n = len(scores)
        st = self._stats
        base = dict(
            window=self._window, count=n, threshold=self._threshold, z_sigmas=self._z,
            calibration_median=None if st is None else st.p50,
        )
        if st is None:
            return Health(
                state=INSUFFICIENT, reason="the model's metadata has no usable score_stats (normal-score "
                "statistics); re-calibrate it with 'ffcalib thresholds' to enable drift monitoring",
                recent_median=None, median_bounds=None, share_above_threshold=None, expected_share=None,
                share_bound=None, **base,
            )
        median = float(np.median(scores)) if n else None
        share = float(np.mean(scores > self._threshold)) if n else None
        expected = None if self._beta is None else self._beta[0] / sum(self._beta)
        if n < min(MIN_SCORES, self._window):
            return Health(
                state=INSUFFICIENT, reason=f"{n} score(s) so far; a verdict needs {min(MIN_SCORES, self._window)}",
                recent_median=median, median_bounds=None, share_above_threshold=share, expected_share=expected,
                share_bound=None, **base,
            )
        # Hysteresis: once in drift, the bounds shrink to EXIT_FRACTION until it is left.
        scale = EXIT_FRACTION if self._state == DRIFT else 1.0
        half = scale * self._z * MEDIAN_SD_FACTOR * st.std * math.sqrt(1.0 / n + 1.0 / st.count)
        low, high = st.p50 - half, st.p50 + half
        bound = None
        if self._beta is not None:
            a, b = self._beta
            limit = share_limit(n, a, b, self._tail)
            bound = expected + scale * (limit / n - expected)
        problems = []
        if not low <= median <= high:
            side = "above" if median > high else "below"
            problems.append(
                f"the median of the last {n} scores, {median:.4g}, is {side} the range [{low:.4g}, {high:.4g}] that "
                f"calibration allows (median {st.p50:.4g} of {st.count} normals, {self._z:g} sigma)"
            )
        if bound is not None and share > bound:
            problems.append(
                f"{share:.1%} of the last {n} scores are above the image threshold {self._threshold:.4g}, more than "
                f"the {bound:.1%} calibration allows (expected {expected:.1%})"
            )
        if problems:
            reason = "; ".join(problems) + (
                ". Either many recent parts are defective (a process problem upstream), or normal parts now "
                "score differently from the calibration images: check the rejected parts first, then lighting, "
                "focus and the parts; re-calibrate ('ffcalib thresholds') or retrain on current images only if "
                "good parts are being rejected."
            )
            state = DRIFT
        else:
            state = OK
            reason = f"the last {n} scores match calibration (median {median:.4g} in [{low:.4g}, {high:.4g}])"
        return Health(
            state=state, reason=reason, recent_median=median, median_bounds=(low, high),
            share_above_threshold=share, expected_share=expected, share_bound=bound, **base,
        )

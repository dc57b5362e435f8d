"""The tail model's threshold (ffcore.operating_point) computed independently of ffcore, for
tests that check a stored threshold against the scores it was set on."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def box_cox_normal_quantile(x, target_frr: float) -> float:
    """The Box-Cox exponent maximizing the profile likelihood on a dense grid over the rule's
    range [-2.25, 3.25], then the normal (1 - target) quantile of the transformed scores
    (sample sd), transformed back. Scores must be positive."""
    x = np.asarray(x, dtype=np.float64)
    lams = np.linspace(-2.25, 3.25, 22001)
    logx = np.log(x)

    def transform(lam):
        return logx if lam == 0 else (x ** lam - 1) / lam

    loglik = [-0.5 * x.size * np.log(np.var(transform(lam))) + (lam - 1) * logx.sum() for lam in lams]
    lam = float(lams[int(np.argmax(loglik))])
    y = transform(lam)
    q = y.mean() + NormalDist().inv_cdf(1 - target_frr) * y.std(ddof=1)
    return float(np.exp(q) if lam == 0 else (1 + lam * q) ** (1 / lam))

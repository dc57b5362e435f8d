"""Does the stored threshold hold on new normals? (issue 21, thresholds on few normals)

For synthetic normal-score populations whose true false-reject rate at any threshold is
known in closed form, draw n normals per seed, set the threshold with each rule, and count
the seeds whose TRUE rate lies within [target/2, 2*target]. Rules:

  old        the order statistic (ffcore.metrics.threshold_at_frr): what fftrain/ffcalib stored before
  new        ffcore.operating_point (order statistic from normals_for_target, tail model below)
  normal     (--candidates) a normal fit of the raw scores (the ideal rule for the normal family)
  lognormal  (--candidates) a normal fit of log scores (the ideal rule for the log-normal family)
  gpd        (--candidates) a generalized Pareto fit (probability-weighted moments) of the scores
             above their 80th percentile, extrapolated to the target

Also the share of seeds whose reported interval contains the true rate (the new rule's CI).

    python benchmarks/threshold_holdout.py [--seeds 200] [--target 0.02] [--candidates]

Prints the table with the machine line and writes benchmarks/results/threshold-holdout.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ffcore.metrics import threshold_at_frr
from ffcore.operating_point import operating_point

SIZES = (30, 100, 300)
OUT = Path(__file__).parent / "results" / "threshold-holdout.json"


@dataclass(frozen=True)
class Family:
    name: str
    draw: Callable[[np.random.Generator, int], np.ndarray]
    survival: Callable[[float], float]  # P(X > t), closed form


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def _positive(sf: Callable[[float], float]) -> Callable[[float], float]:
    return lambda t: sf(t) if t > 0 else 1.0


FAMILIES = (
    Family("normal(5, 1)", lambda r, n: r.normal(5.0, 1.0, n), lambda t: _normal_sf(t - 5.0)),
    Family("log-normal(sigma 0.5)", lambda r, n: np.exp(r.normal(0.0, 0.5, n)),
           _positive(lambda t: _normal_sf(math.log(t) / 0.5))),
    Family("log-normal(sigma 1)", lambda r, n: np.exp(r.normal(0.0, 1.0, n)),
           _positive(lambda t: _normal_sf(math.log(t)))),
    Family("gamma(shape 2)", lambda r, n: r.gamma(2.0, 1.0, n), _positive(lambda t: math.exp(-t) * (1.0 + t))),
    Family("log-logistic(shape 4, heavy tail)", lambda r, n: (lambda u: (u / (1.0 - u)) ** 0.25)(r.random(n)),
           _positive(lambda t: 1.0 / (1.0 + t ** 4))),
    Family("Weibull(shape 1.5)", lambda r, n: r.weibull(1.5, n), _positive(lambda t: math.exp(-t ** 1.5))),
    Family("exponential", lambda r, n: r.exponential(1.0, n), _positive(lambda t: math.exp(-t))),
)


def _z(target: float) -> float:
    lo, hi = -40.0, 40.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _normal_sf(mid) > target else (lo, mid)
    return 0.5 * (lo + hi)


def rules(target: float, candidates: bool) -> dict[str, Callable[[np.ndarray], float]]:
    out = {"old": lambda x: threshold_at_frr(x, target), "new": lambda x: operating_point(x, target).threshold}
    if candidates:
        z = _z(target)
        out["normal"] = lambda x: float(x.mean() + z * x.std(ddof=1))
        out["lognormal"] = lambda x: float(np.exp(np.log(x).mean() + z * np.log(x).std(ddof=1)))
        out["gpd"] = lambda x: gpd_threshold(x, target)
    return out


def gpd_threshold(x: np.ndarray, target: float, tail_share: float = 0.2) -> float:
    """Hosking & Wallis' probability-weighted-moment fit of the exceedances over the
    (1 - tail_share) order statistic u; the threshold where the fitted tail leaves ``target``."""
    s = np.sort(x)
    m = max(3, int(round(tail_share * s.size)))
    u = s[s.size - m - 1]
    y = s[s.size - m:] - u
    plotting = (np.arange(1, m + 1) - 0.35) / m
    a0, a1 = y.mean(), np.mean((1.0 - plotting) * y)
    k = a0 / (a0 - 2.0 * a1) - 2.0
    sigma = 2.0 * a0 * a1 / (a0 - 2.0 * a1)
    leave = target * s.size / m  # the share of the exceedances above the threshold
    return float(u - sigma * math.log(leave) if abs(k) < 1e-9 else u + sigma / k * (1.0 - leave ** k))


def measure(family: Family, n: int, target: float, seeds: int, candidates: bool) -> dict:
    held = {name: 0 for name in rules(target, candidates)}
    rates = {name: [] for name in held}
    ci_hits = 0
    method = set()
    for seed in range(seeds):
        x = family.draw(np.random.default_rng(seed), n)
        for name, rule in rules(target, candidates).items():
            rate = family.survival(rule(x))
            rates[name].append(rate)
            held[name] += target / 2 <= rate <= 2 * target
        op = operating_point(x, target)
        method.add(op.method.value)
        ci_hits += op.frr_low <= family.survival(op.threshold) <= op.frr_high
    return {
        "family": family.name, "n": n, "seeds": seeds,
        "held": {k: v / seeds for k, v in held.items()},
        "median_rate": {k: float(np.median(v)) for k, v in rates.items()},
        "new_ci_contains_true_rate": ci_hits / seeds,
        "new_method": sorted(method),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--target", type=float, default=0.02)
    ap.add_argument("--candidates", action="store_true", help="also the plain normal and log-normal fits")
    a = ap.parse_args()
    from ffeval.machine import describe, one_line

    machine = describe()
    t0 = time.perf_counter()
    rows = [measure(f, n, a.target, a.seeds, a.candidates) for f in FAMILIES for n in SIZES]
    names = list(rows[0]["held"])
    print(f"# true false-reject rate within [{a.target / 2:g}, {2 * a.target:g}] (target {a.target:g}), "
          f"share of {a.seeds} seeds; {one_line(machine)}")
    print("| family | n | " + " | ".join(names) + " | new: CI contains true rate | new: method |")
    print("|---|---|" + "---|" * (len(names) + 2))
    for r in rows:
        cells = " | ".join(f"{r['held'][k]:.2f} (median {r['median_rate'][k]:.3f})" for k in names)
        print(f"| {r['family']} | {r['n']} | {cells} | {r['new_ci_contains_true_rate']:.2f} | {', '.join(r['new_method'])} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"target_frr": a.target, "seeds": a.seeds, "rows": rows, "machine": machine,
                               "machine_line": one_line(machine), "seconds": time.perf_counter() - t0}, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

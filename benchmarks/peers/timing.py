"""Interleaved timing of several runners in one process, so every row sees the same machine state.

Each round runs every runner once on the same batch, in an order rotated by one each round
(no runner always follows the same neighbour), with an untimed pause between runners:
ONNX Runtime, OpenVINO and OpenMP worker threads spin-wait after a call, and without the
pause each engine would be timed against the previous one's spinning threads (ffbench's
``settle_ms`` does the same, see ffeval/bench.py).
"""

from __future__ import annotations

import time

import numpy as np


def summarize(ms: list[float], batch: int) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return {"n": int(a.size), "p10_ms": float(p10), "p50_ms": float(p50), "p90_ms": float(p90),
            "mean_ms": float(a.mean()), "images_per_s": batch / (p50 / 1e3)}


def output_check(maps: np.ndarray, scores: np.ndarray, batch: int) -> dict:
    """Shapes and finiteness of one call's outputs (random weights may overflow a graph)."""
    maps, scores = np.asarray(maps), np.asarray(scores)
    return {"map_shape": list(maps.shape), "score_shape": list(scores.shape),
            "finite_map_fraction": float(np.isfinite(maps).mean()),
            "finite_scores": int(np.isfinite(scores).sum()), "batch": batch}


def interleaved(runners: list, batch: np.ndarray, rounds: int, warmup: int, settle_ms: float,
                log=print) -> dict[str, dict]:
    """{runner key: summary + output check} for ``rounds`` timed rounds after ``warmup`` untimed ones."""
    n = len(batch)
    inputs = {r.key: r.feed(batch) for r in runners}
    checks = {}
    for i in range(warmup):
        for r in runners:
            maps, scores = r.run(inputs[r.key])
            if i == 0:
                checks[r.key] = output_check(maps, scores, n)
            time.sleep(settle_ms / 1e3)
    times: dict[str, list[float]] = {r.key: [] for r in runners}
    t_start = time.perf_counter()
    for k in range(rounds):
        order = runners[k % len(runners):] + runners[: k % len(runners)]
        for r in order:
            x = inputs[r.key]
            t0 = time.perf_counter()
            r.run(x)
            times[r.key].append((time.perf_counter() - t0) * 1e3)
            time.sleep(settle_ms / 1e3)
        if k == 0 or (k + 1) % 5 == 0:
            log(f"  batch {n}: round {k + 1}/{rounds} ({time.perf_counter() - t_start:.0f} s)")
    return {key: {**summarize(ms, n), "outputs": checks.get(key)} for key, ms in times.items()}

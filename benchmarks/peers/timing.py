"""The runners of one process timed through ffrt's one latency harness (ffcore.timing.interleaved:
one call of each runner per round, an untimed settle pause after each call), per batch size."""

from __future__ import annotations

import numpy as np
from ffcore.timing import interleaved as harness
from ffeval.bench import summarize


def output_check(maps: np.ndarray, scores: np.ndarray, batch: int) -> dict:
    """Shapes and finiteness of one call's outputs (random weights may overflow a graph)."""
    maps, scores = np.asarray(maps), np.asarray(scores)
    return {"map_shape": list(maps.shape), "score_shape": list(scores.shape),
            "finite_map_fraction": float(np.isfinite(maps).mean()),
            "finite_scores": int(np.isfinite(scores).sum()), "batch": batch}


def interleaved(runners: list, batch: np.ndarray, rounds: int, warmup: int, settle_ms: float,
                log=print) -> dict[str, dict]:
    """{runner key: ffbench's summary + img/s at the p50 latency + an output check}."""
    n = len(batch)
    inputs = {r.key: r.feed(batch) for r in runners}
    checks = {r.key: output_check(*r.run(inputs[r.key]), n) for r in runners}  # also the first warm-up call

    def progress(k: int) -> None:
        if k == 1 or k % 5 == 0:
            log(f"  batch {n}: round {k}/{rounds}", flush=True)

    calls = {r.key: (lambda r=r: r.run(inputs[r.key])) for r in runners}
    times = harness(calls, rounds=rounds, warmup=warmup, settle_s=settle_ms / 1e3, on_round=progress)
    out = {}
    for key, ms in times.items():
        s = summarize(ms, n)
        out[key] = {**s, "images_per_s_mean": s.pop("images_per_s"), "images_per_s": n * 1000.0 / s["p50_ms"],
                    "outputs": checks[key]}
    return out

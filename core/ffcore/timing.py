"""The one latency harness: engines timed in interleaved rounds.

ffbench (ffeval.bench), the INT8 report's latency table (ffcalib.gate.benchmark), the
demo's ONNX Runtime vs PyTorch table and the ablation's A/B script all time through
:func:`interleaved`, so a figure from one tool is measured like a figure from another.

Why interleaved: on a shared or throttling machine the speed drifts over seconds; timing
engine A for a while and then engine B puts that drift into the A/B ratio. One call of
each engine per round, in turn, exposes both to the same machine state. Why the pause
(``settle_s``, untimed) after each call: ONNX Runtime's and OpenMP's worker threads
spin-wait after a run, and without the pause each engine would be timed against the
previous one's spinning threads (benchmarks/README.md gives the size of the effect).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np


def interleaved(
    runners: Mapping[str, Callable[[], object]],
    *,
    rounds: int | None = None,
    min_rounds: int = 1,
    min_seconds: float = 0.0,
    warmup: int = 1,
    settle_s: float = 0.0,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Milliseconds per call of each runner (``time.perf_counter`` around the call).

    Every runner is first called ``warmup`` times (untimed: arenas, kernel selection,
    lazy initialisation), then once per round, in the mapping's order, with ``settle_s``
    of untimed sleep after each call. With ``rounds`` exactly that many rounds run;
    without, rounds go on until there are at least ``min_rounds`` and ``min_seconds``
    have passed since the first timed round. ``on_round(n)`` is called after round n
    (1-based), e.g. to advance a progress bar. Returns one float64 array per runner, in
    the order of the calls.
    """
    if not runners:
        raise ValueError("interleaved needs at least one runner")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1, not {rounds}")
    if min_rounds < 1 or warmup < 0 or settle_s < 0 or min_seconds < 0:
        raise ValueError("min_rounds must be >= 1 and warmup, settle_s, min_seconds >= 0")
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    start = time.perf_counter()
    n = 0
    while True:
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
            if settle_s > 0:
                time.sleep(settle_s)
        n += 1
        if on_round is not None:
            on_round(n)
        if rounds is not None:
            if n >= rounds:
                break
        elif n >= min_rounds and time.perf_counter() - start >= min_seconds:
            break
    return {k: np.asarray(v, dtype=np.float64) for k, v in times.items()}

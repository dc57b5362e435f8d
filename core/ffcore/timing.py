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

The pause is not always enough: in one process, a runtime can still be slowed by another's
threads (PyTorch's OpenMP pool next to ONNX Runtime's). Figures meant to describe one runtime
come from a process of its own (``ffeval.modelonly``, ``python -m fftrain.eager``);
:class:`IsolationCheck` compares such a figure with the same runtime interleaved with the
other in one process, and says when the two differ by more than :data:`INTERFERENCE_TOLERANCE`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
    per_turn: int = 1,
    rewarm: int = 0,
) -> dict[str, np.ndarray]:
    """Milliseconds per call of each runner (``time.perf_counter`` around the call).

    Every runner is first called ``warmup`` times (untimed: arenas, kernel selection,
    lazy initialisation), then takes one turn per round, in the mapping's order: ``rewarm``
    untimed calls, then ``per_turn`` timed ones, then ``settle_s`` of untimed sleep. With
    ``rounds`` exactly that many rounds run; without, rounds go on until there are at least
    ``min_rounds`` and ``min_seconds`` have passed since the first timed round.
    ``on_round(n)`` is called after round n (1-based), e.g. to advance a progress bar.
    Returns one float64 array per runner, in the order of the calls.

    ``rewarm``: where the runners are different runtimes in one process (ONNX Runtime,
    OpenVINO), the first call after a switch pays for the previous runtime's worker threads,
    which keep spinning for longer than a short pause (up to 50% on a 2-core machine,
    whichever runtime came before; benchmarks/README.md, "auto"): an untimed call at the start
    of each turn takes that, and the timed calls are the steady state a line runs in.
    """
    if not runners:
        raise ValueError("interleaved needs at least one runner")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds must be >= 1, not {rounds}")
    if min_rounds < 1 or per_turn < 1 or warmup < 0 or rewarm < 0 or settle_s < 0 or min_seconds < 0:
        raise ValueError("min_rounds and per_turn must be >= 1 and warmup, rewarm, settle_s, min_seconds >= 0")
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in runners}
    start = time.perf_counter()
    n = 0
    while True:
        for name, fn in runners.items():
            for _ in range(rewarm):
                fn()
            for _ in range(per_turn):
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


#: How far apart a runtime's p50 may be, alone in its process and interleaved with another
#: runtime in one process, before the runtimes count as disturbing each other.
INTERFERENCE_TOLERANCE = 0.10


@dataclass(frozen=True)
class IsolationCheck:
    """One runtime's p50 latency alone (a process of its own) and interleaved with another
    runtime in one process: whether sharing the process changed what it measures."""

    alone_ms: float
    interleaved_ms: float
    tolerance: float = INTERFERENCE_TOLERANCE

    @property
    def ratio(self) -> float:
        """interleaved / alone: above 1 the shared process slowed the runtime down."""
        return self.interleaved_ms / self.alone_ms

    @property
    def interfered(self) -> bool:
        return abs(self.ratio - 1.0) > self.tolerance

    def to_dict(self) -> dict:
        return {"alone_p50_ms": self.alone_ms, "interleaved_p50_ms": self.interleaved_ms, "ratio": self.ratio,
                "tolerance": self.tolerance, "interfered": self.interfered}

    def line(self, what: str, other: str) -> str:
        """One line: both figures, and a warning when they differ by more than the tolerance."""
        text = (f"{what}: {self.alone_ms:.1f} ms alone in its own process, {self.interleaved_ms:.1f} ms interleaved "
                f"with {other} in one process ({100 * (self.ratio - 1):+.0f}%)")
        if self.interfered:
            text += (f": WARNING the runtimes disturb each other in one process (more than "
                     f"{100 * self.tolerance:.0f}% apart); the isolated figure is the model's")
        return text


def isolation_check(alone_ms: float, interleaved_ms: float, tolerance: float = INTERFERENCE_TOLERANCE) -> IsolationCheck:
    """Compare a runtime's p50 alone in its process with its p50 interleaved with another runtime."""
    if not (alone_ms > 0 and interleaved_ms > 0):
        raise ValueError(f"latencies must be positive, not {alone_ms!r} and {interleaved_ms!r}")
    return IsolationCheck(float(alone_ms), float(interleaved_ms), tolerance)

"""Latency and throughput of the last N detector calls.

A rolling window (default: the last 1000 calls), not a lifetime average: on a line the
question is "how fast is it *now*", and a window also keeps memory bounded on a process
that runs for months.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_WINDOW = 1000


class LatencyStats(BaseModel):
    """A snapshot of the window. Latencies are end-to-end per call (preprocess + inference
    + postprocess), in milliseconds.

    Throughput is wall-clock, so it is right when several threads call one detector at
    once (their calls overlap; a sum of latencies would undercount them):

    ``fps``:      images / wall time from the start of the window's first call to the end
                  of its last: the rate the detector actually delivered, idle gaps between
                  calls included (on a triggered line: the trigger rate).
    ``busy_fps``: images / wall time during which at least one call was running (the union
                  of the call intervals): what it delivers while kept busy. With one caller
                  it equals images / sum of latencies.
    """

    model_config = ConfigDict(frozen=True)

    window: int = Field(description="Capacity of the window (calls).")
    count: int = Field(description="Calls in the window.")
    images: int = Field(description="Images processed by those calls.")
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    fps: float = Field(description="images / wall-clock seconds from the first call's start to the last call's end.")
    busy_fps: float = Field(default=0.0, description="images / wall-clock seconds in which at least one call was running.")
    wall_s: float = Field(default=0.0, description="Wall-clock seconds the window spans (first start to last end).")
    backend: str = Field(default="", description="The backend these calls ran on (Detector.backend_name).")
    precision: str = Field(default="", description="The precision it computed in (Detector.precision).")

    def __str__(self) -> str:
        if self.count == 0:
            return "no calls timed yet"
        calls = f"{self.count} call{'s' if self.count != 1 else ''}"
        return (
            f"{calls}, {self.images} image{'s' if self.images != 1 else ''}: "
            f"latency p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"mean {self.mean_ms:.2f} ms, max {self.max_ms:.2f} ms; {self.fps:.1f} images/s over "
            f"{self.wall_s:.2f} s wall clock ({self.busy_fps:.1f} images/s while busy)"
            + (f"; {self.backend}, {self.precision}" if self.backend else "")
        )


class LatencyWindow:
    """Thread-safe rolling record of (seconds, images, end time) per call."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, not {size}")
        self._size = size
        self._calls: deque[tuple[float, int, float]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, seconds: float, images: int, end: float | None = None) -> None:
        """One call of ``seconds`` on ``images`` images that ended at ``end``
        (``time.perf_counter()`` clock; default: now)."""
        end = time.perf_counter() if end is None else float(end)
        with self._lock:
            self._calls.append((float(seconds), int(images), end))

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()

    def snapshot(self) -> LatencyStats:
        # Copy under the lock, compute outside it: percentiles must not block callers.
        with self._lock:
            calls = list(self._calls)
        if not calls:
            return LatencyStats(
                window=self._size, count=0, images=0, p50_ms=0.0, p90_ms=0.0, p99_ms=0.0,
                mean_ms=0.0, max_ms=0.0, fps=0.0, busy_fps=0.0, wall_s=0.0,
            )
        seconds = np.array([s for s, _, _ in calls], dtype=np.float64)
        ends = np.array([e for _, _, e in calls], dtype=np.float64)
        ms = seconds * 1000.0
        images = sum(n for _, n, _ in calls)
        starts = ends - seconds
        wall_s = float(ends.max() - starts.min())
        busy_s = _union_length(starts, ends)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return LatencyStats(
            window=self._size,
            count=len(calls),
            images=images,
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            mean_ms=float(ms.mean()),
            max_ms=float(ms.max()),
            fps=images / wall_s if wall_s > 0 else 0.0,
            busy_fps=images / busy_s if busy_s > 0 else 0.0,
            wall_s=wall_s,
        )


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    """Total length of the union of the intervals [starts[i], ends[i]]: the span from the
    first start to the last end, less the gaps that no interval covers."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)  # the latest end among the intervals started so far
    gaps = np.clip(s[1:] - reach[:-1], 0.0, None).sum()
    return float(reach[-1] - s[0] - gaps)

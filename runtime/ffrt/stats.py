"""Latency and throughput of the last N detector calls.

A rolling window (default: the last 1000 calls), not a lifetime average: on a line the
question is "how fast is it *now*", and a window also keeps memory bounded on a process
that runs for months.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_WINDOW = 1000


class LatencyStats(BaseModel):
    """A snapshot of the window. Latencies are end-to-end per call (preprocess + inference
    + postprocess), in milliseconds.

    ``fps`` is images / (sum of call latencies in the window): the throughput of the calls
    themselves. With several threads calling one detector at once, calls overlap, so the
    wall-clock throughput is higher than this figure.
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
    fps: float = Field(description="images / total seconds spent in those calls.")

    def __str__(self) -> str:
        if self.count == 0:
            return "no calls timed yet"
        calls = f"{self.count} call{'s' if self.count != 1 else ''}"
        return (
            f"{calls}, {self.images} image{'s' if self.images != 1 else ''}: "
            f"latency p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"mean {self.mean_ms:.2f} ms, max {self.max_ms:.2f} ms; {self.fps:.1f} images/s"
        )


class LatencyWindow:
    """Thread-safe rolling record of (seconds, images) per call."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, not {size}")
        self._size = size
        self._calls: deque[tuple[float, int]] = deque(maxlen=size)
        self._lock = threading.Lock()

    def record(self, seconds: float, images: int) -> None:
        with self._lock:
            self._calls.append((float(seconds), int(images)))

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
                mean_ms=0.0, max_ms=0.0, fps=0.0,
            )
        ms = np.array([s for s, _ in calls], dtype=np.float64) * 1000.0
        images = sum(n for _, n in calls)
        total_s = float(ms.sum()) / 1000.0
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
            fps=images / total_s if total_s > 0 else 0.0,
        )

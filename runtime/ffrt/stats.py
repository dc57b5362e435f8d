"""Latency and throughput of the last N detector calls, and of the submit pipeline.

A rolling window (default: the last 1000 calls), not a lifetime average: on a line the
question is "how fast is it *now*", and a window also keeps memory bounded on a process
that runs for months. ``LatencyWindow`` times direct calls (``det(image)``,
``predict_batch``); ``PipelineRecorder`` times each image of ``Detector.submit`` by stage,
per source and overall, and counts what did not become a result (rejects, drops, errors).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

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
        self._size = _window_size(size)
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


def _window_size(size: int) -> int:
    if size < 1:
        raise ValueError(f"window size must be at least 1, not {size}")
    return size


def _union_length(starts: np.ndarray, ends: np.ndarray) -> float:
    """Total length of the union of the intervals [starts[i], ends[i]]: the span from the
    first start to the last end, less the gaps that no interval covers."""
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)  # the latest end among the intervals started so far
    gaps = np.clip(s[1:] - reach[:-1], 0.0, None).sum()
    return float(reach[-1] - s[0] - gaps)


# ---------------------------------------------------------------------------------------
# The submit pipeline: per-stage latency, per source and overall
# ---------------------------------------------------------------------------------------

#: Sources tracked one by one; results of further sources count in the overall figures only
#: (a caller passing a new source per frame must not grow memory without bound).
MAX_SOURCES = 256
STAGES = ("latency", "queue", "preprocess", "inference", "postprocess")


@dataclass(frozen=True)
class StageLatency:
    """Percentiles of one stage over the window, in milliseconds."""

    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True)
class PipelineStats:
    """What ``Detector.submit`` delivered, for one source or for all (``source`` None).

    Windowed (the last ``window`` results): ``count``, ``throughput_fps`` (results / wall
    seconds from the first one's submit to the last one's completion) and the latency of
    each stage (``latency`` = end to end = queue + preprocess + inference + postprocess;
    see :class:`~ffrt.result.LatencySplit`). Counters since the Detector started:
    ``submitted``, ``completed`` (a Result), ``failed`` (an exception: bad image, backend),
    ``anomalous`` (completed with is_anomalous), ``rejected`` (QueueFullError, policy
    "reject"), ``dropped`` (policy "drop_oldest"), ``cancelled`` (by the caller or by
    ``close(cancel_pending=True)``). Overall only: ``queue_depth`` now, ``batches`` and
    ``mean_batch_size`` over the window's batches, and the ``sources`` seen.
    """

    source: str | None
    window: int
    count: int
    throughput_fps: float
    latency: StageLatency
    queue: StageLatency
    preprocess: StageLatency
    inference: StageLatency
    postprocess: StageLatency
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    anomalous: int = 0
    rejected: int = 0
    dropped: int = 0
    cancelled: int = 0
    queue_depth: int = 0
    batches: int = 0
    mean_batch_size: float = 0.0
    sources: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = list(self.sources)
        return d


_COUNTERS = ("submitted", "completed", "failed", "anomalous", "rejected", "dropped", "cancelled")


class _Track:
    """One source's (or the overall) window and counters; used under PipelineRecorder's lock."""

    def __init__(self, size: int) -> None:
        # (submit time, done time, total, queue, preprocess, inference, postprocess) in s / ms
        self.rows: deque[tuple[float, ...]] = deque(maxlen=size)
        self.counts = dict.fromkeys(_COUNTERS, 0)


class PipelineRecorder:
    """Thread-safe record of the submit pipeline's results, per source and overall."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        self._size = _window_size(size)
        self._lock = threading.Lock()
        self._all = _Track(size)
        self._sources: dict[str, _Track] = {}
        self._batches: deque[int] = deque(maxlen=size)

    def count(self, source: object, what: str, n: int = 1) -> None:
        """Add ``n`` to counter ``what`` (one of _COUNTERS) of ``source`` and overall."""
        with self._lock:
            for track in self._tracks(source):
                track.counts[what] += n

    def batch(self, size: int) -> None:
        with self._lock:
            self._batches.append(size)

    def result(self, source: object, submitted: float, done: float, split_ms: tuple[float, ...], anomalous: bool) -> None:
        """A completed result: ``submitted``/``done`` on the perf_counter clock, ``split_ms``
        = (queue, preprocess, inference, postprocess) in milliseconds."""
        row = (submitted, done, (done - submitted) * 1e3, *split_ms)
        with self._lock:
            for track in self._tracks(source):
                track.rows.append(row)
                track.counts["completed"] += 1
                track.counts["anomalous"] += bool(anomalous)

    def snapshot(self, source: object = None, queue_depth: int = 0) -> PipelineStats:
        with self._lock:
            if source is None:
                track, batches, sources = self._all, list(self._batches), tuple(self._sources)
            else:
                track, batches, sources = self._sources.get(_key(source)), [], ()
            rows = list(track.rows) if track is not None else []
            counts = dict(track.counts) if track is not None else dict.fromkeys(_COUNTERS, 0)
        stages = dict.fromkeys(STAGES, StageLatency())
        fps = 0.0
        if rows:
            a = np.array(rows, dtype=np.float64)
            for i, name in enumerate(STAGES):
                ms = a[:, 2 + i]
                p50, p90, p99 = np.percentile(ms, [50, 90, 99])
                stages[name] = StageLatency(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.max()))
            wall = float(a[:, 1].max() - a[:, 0].min())
            fps = len(rows) / wall if wall > 0 else 0.0
        return PipelineStats(
            source=None if source is None else _key(source), window=self._size, count=len(rows), throughput_fps=fps,
            **stages, **counts, queue_depth=queue_depth if source is None else 0, batches=len(batches),
            mean_batch_size=float(np.mean(batches)) if batches else 0.0, sources=sources,
        )

    def _tracks(self, source: object) -> list[_Track]:
        if source is None:
            return [self._all]
        key = _key(source)
        track = self._sources.get(key)
        if track is None:
            if len(self._sources) >= MAX_SOURCES:
                return [self._all]
            track = self._sources[key] = _Track(self._size)
        return [self._all, track]


def _key(source: object) -> str:
    return source if isinstance(source, str) else str(source)

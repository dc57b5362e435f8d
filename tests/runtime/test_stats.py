"""LatencyWindow / LatencyStats: exact percentiles on known data, rolling, thread-safe."""

import threading

import numpy as np
import pytest

from ffrt.stats import LatencyStats, LatencyWindow


def test_empty_window():
    s = LatencyWindow().snapshot()
    assert (s.count, s.images, s.fps, s.window) == (0, 0, 0.0, 1000)
    assert str(s) == "no calls timed yet"


def test_known_latencies():
    w = LatencyWindow()
    for ms in range(1, 101):  # 1..100 ms, 2 images each
        w.record(ms / 1000, 2)
    s = w.snapshot()
    assert (s.count, s.images) == (100, 200)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5) and s.max_ms == pytest.approx(100)
    assert s.fps == pytest.approx(200 / 5.05)  # images / total seconds (5050 ms)
    text = str(s)
    assert "100 calls, 200 images" in text and "p99 99.01 ms" in text and "39.6 images/s" in text


def test_window_rolls():
    w = LatencyWindow(size=3)
    for ms in (1000, 1000, 1, 2, 3):
        w.record(ms / 1000, 1)
    s = w.snapshot()
    assert s.count == 3 and s.max_ms == pytest.approx(3)  # the two slow calls fell out
    w.reset()
    assert w.snapshot().count == 0
    with pytest.raises(ValueError):
        LatencyWindow(size=0)


def test_threads_do_not_lose_records():
    # Guards the bookkeeping, not the GIL: a counter or running total kept beside the
    # deque without the lock (read-modify-write) loses updates here.
    w = LatencyWindow(size=100_000)

    def work():
        for _ in range(2000):
            w.record(0.001, 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.snapshot().count == 8000


def test_stats_is_frozen():
    s = LatencyWindow().snapshot()
    assert isinstance(s, LatencyStats)
    with pytest.raises(Exception):
        s.count = 5


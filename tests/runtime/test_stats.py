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
    end = 1000.0
    for ms in range(1, 101):  # 1..100 ms, 2 images each, back to back
        end += ms / 1000
        w.record(ms / 1000, 2, end=end)
    s = w.snapshot()
    assert (s.count, s.images) == (100, 200)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5) and s.max_ms == pytest.approx(100)
    assert s.wall_s == pytest.approx(5.05)
    assert s.fps == pytest.approx(200 / 5.05) and s.busy_fps == pytest.approx(200 / 5.05)
    text = str(s)
    assert "100 calls, 200 images" in text and "p99 99.01 ms" in text and "39.6 images/s" in text


def test_overlapping_calls_count_wall_clock_time():
    # Issue 10: 8 threads each running a 1 s call at the same time deliver 8 images in 1 s
    # of wall time; images / sum of latencies said 1 image/s.
    w = LatencyWindow()
    for _ in range(8):
        w.record(1.0, 1, end=101.0)
    s = w.snapshot()
    assert s.wall_s == pytest.approx(1.0)
    assert s.fps == pytest.approx(8.0) and s.busy_fps == pytest.approx(8.0)
    assert "8.0 images/s" in str(s)


def test_idle_gaps_lower_fps_but_not_busy_fps():
    # Two 0.5 s calls (one image each) 10 s apart, and one 1 s call overlapping the first.
    w = LatencyWindow()
    w.record(0.5, 1, end=100.5)
    w.record(1.0, 1, end=101.2)   # 100.2 .. 101.2
    w.record(0.5, 1, end=110.5)   # 110.0 .. 110.5
    s = w.snapshot()
    assert s.wall_s == pytest.approx(10.5)  # 100.0 .. 110.5
    assert s.fps == pytest.approx(3 / 10.5)
    assert s.busy_fps == pytest.approx(3 / 1.7)  # busy 100.0..101.2 and 110.0..110.5


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


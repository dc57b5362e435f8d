"""ffcore.timing.interleaved, the latency harness every tool uses: call order, counts,
stopping rules, and that the figures are the calls' own durations."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ffcore.timing import interleaved


def test_rounds_interleave_the_runners_after_their_warmup():
    calls = []
    out = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert list(out) == ["a", "b"] and all(v.shape == (3,) and v.dtype == np.float64 for v in out.values())


def test_times_are_each_calls_own_duration_and_exclude_the_settle_pause():
    out = interleaved({"fast": lambda: None, "slow": lambda: time.sleep(0.02)}, rounds=3, warmup=0, settle_s=0.03)
    assert np.all(out["slow"] >= 20.0) and np.all(out["slow"] < 30.0 + 25.0)  # 20 ms sleep, scheduler slack
    assert np.all(out["fast"] < 20.0)  # the 30 ms pause after each call is not counted


def test_without_rounds_it_runs_for_min_seconds_and_min_rounds():
    seen = []
    t0 = time.perf_counter()
    out = interleaved({"x": lambda: time.sleep(0.005)}, min_rounds=3, min_seconds=0.1, warmup=0, on_round=seen.append)
    assert time.perf_counter() - t0 >= 0.1
    assert len(out["x"]) >= 3 and seen == list(range(1, len(out["x"]) + 1))
    assert len(interleaved({"x": lambda: None}, min_rounds=7, warmup=0)["x"]) == 7


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"min_rounds": 0}, {"warmup": -1}, {"settle_s": -1.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        interleaved({"x": lambda: None}, **kwargs)
    with pytest.raises(ValueError):
        interleaved({})

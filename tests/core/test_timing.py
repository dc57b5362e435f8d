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


def test_each_turn_starts_with_untimed_calls_then_times_per_turn_calls():
    calls = []
    out = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2, warmup=1,
                      per_turn=2, rewarm=1)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert all(v.shape == (4,) for v in out.values())


def test_the_switch_penalty_is_not_timed_with_rewarm():
    """A runner whose first call after the other one ran is slow (another runtime's threads
    still spinning): without rewarm every timed call pays it, with it none does."""
    last = [None]

    def runner(name):
        def call():
            time.sleep(0.03 if last[0] not in (None, name) else 0.002)
            last[0] = name
        return call

    plain = interleaved({"a": runner("a"), "b": runner("b")}, rounds=3, warmup=0)
    rewarmed = interleaved({"a": runner("a"), "b": runner("b")}, rounds=3, warmup=0, rewarm=1, per_turn=2)
    assert np.median(plain["b"]) >= 30.0
    assert np.all(rewarmed["a"] < 25.0) and np.all(rewarmed["b"] < 25.0)


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"min_rounds": 0}, {"warmup": -1}, {"settle_s": -1.0},
                                    {"per_turn": 0}, {"rewarm": -1}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        interleaved({"x": lambda: None}, **kwargs)
    with pytest.raises(ValueError):
        interleaved({})


def test_isolation_check_by_hand():
    from ffcore.timing import INTERFERENCE_TOLERANCE, isolation_check

    assert INTERFERENCE_TOLERANCE == 0.10
    # 16.3 ms alone, 25.5 ms next to PyTorch in one process: 1.564x, far beyond 10%.
    slowed = isolation_check(16.3, 25.5)
    assert slowed.ratio == pytest.approx(25.5 / 16.3) and slowed.interfered
    line = slowed.line("ONNX Runtime batch 1", "PyTorch eager")
    assert "16.3 ms alone" in line and "25.5 ms interleaved with PyTorch eager" in line and "+56%" in line
    assert "WARNING" in line
    # 9% apart either way is within the tolerance; 11% is not.
    assert not isolation_check(100.0, 109.0).interfered and not isolation_check(100.0, 91.0).interfered
    assert isolation_check(100.0, 111.0).interfered and isolation_check(100.0, 89.0).interfered
    assert "WARNING" not in isolation_check(100.0, 109.0).line("a", "b")
    assert isolation_check(100.0, 104.0, tolerance=0.03).interfered
    d = slowed.to_dict()
    assert d == {"alone_p50_ms": 16.3, "interleaved_p50_ms": 25.5, "ratio": pytest.approx(25.5 / 16.3),
                 "tolerance": 0.10, "interfered": True}
    with pytest.raises(ValueError):
        isolation_check(0.0, 10.0)


def test_the_timed_child_protocol_by_hand(tmp_path):
    """ffcore.timedchild.serve: hello, load, run (timed by the given call), errors as lines."""
    import io
    import json

    from ffcore.timedchild import serve

    batch = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    np.save(tmp_path / "b.npy", batch)
    seen = []
    stdin = io.StringIO(f"run\nload {tmp_path / 'b.npy'}\nrun\nfly\nquit\nrun\n")
    stdout = io.StringIO()
    assert serve({"who": "test"}, lambda b: seen.append(b.copy()) or 1.5, stdin, stdout) == 0
    replies = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert replies[0] == {"ok": True, "who": "test"}
    assert replies[1]["ok"] is False and "run before load" in replies[1]["error"]
    assert replies[2] == {"ok": True} and replies[3]["ms"] == 1.5 and replies[3]["cpu_ms"] >= 0
    assert replies[4]["ok"] is False and "unknown request 'fly'" in replies[4]["error"]
    assert len(replies) == 5  # nothing after quit
    assert len(seen) == 1 and np.array_equal(seen[0], batch)

"""ffeval.modelonly: one backend timed model-only in a child process of its own (the demo's
and the line benchmark's isolated figures), on the session's tiny real FastFlow."""

from __future__ import annotations

import numpy as np
import pytest

from ffeval.errors import BenchError
from ffeval.modelonly import ModelOnlyChild, time_in_child


def test_a_child_process_times_each_batch(tiny_onnx, real_images):
    got = time_in_child(tiny_onnx, real_images, (1, 4), rounds=3, warmup=1, threads=1)
    assert got["backend"].startswith("onnxruntime-cpu") and got["precision"] == "fp32"
    assert set(got["results"]) == {"1", "4"}
    for batch, s in got["results"].items():
        assert s["n"] == 3 and 0 < s["p50_ms"] <= s["max_ms"]
        assert s["images_per_s"] == pytest.approx(int(batch) * 1000.0 / s["mean_ms"])


def test_the_child_runs_the_batch_it_was_given(tiny_onnx, real_images):
    """A batch that is not at the model size fails in the child, and says so in the parent."""
    child = ModelOnlyChild(tiny_onnx, threads=1)
    try:
        child.load(real_images[:2])
        assert child.run() > 0
        child.load(np.zeros((1, 32, 32, 3), np.uint8))
        with pytest.raises(BenchError, match="in its own process"):
            child.run()
    finally:
        child.close()


def test_a_failing_child_says_why_in_one_line(tmp_path, tiny_onnx, real_images):
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(BenchError) as e:
        time_in_child(bad, real_images, (1,), rounds=1)
    assert "in its own process" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BenchError, match="batch 9: only 8 images given"):
        time_in_child(tiny_onnx, real_images, (9,), rounds=1)

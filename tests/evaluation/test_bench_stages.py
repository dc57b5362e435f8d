"""ffbench times the Detector's own stages and loads the model once."""

from __future__ import annotations

from collections import Counter

import ffcore.ort
from ffeval.bench import run_benchmark
from support.counting import count_methods

from ffrt.stages import Stages


def test_ffbench_loads_the_model_once_and_times_the_detectors_stages(tiny_onnx, frame_folder, monkeypatch):
    counts: Counter = Counter()
    real_session = ffcore.ort.make_session

    def counted_session(*a, **k):
        counts["session"] += 1
        return real_session(*a, **k)

    monkeypatch.setattr(ffcore.ort, "make_session", counted_session)
    import ffrt.backends.onnxruntime as ort_backend

    monkeypatch.setattr(ort_backend, "make_session", counted_session)
    count_methods(monkeypatch, Stages, ("prepare", "run", "finish"), counts)
    report = run_benchmark(tiny_onnx, backend="onnxruntime-cpu", batches=(2,), iters=3, warmup=1, threads=1,
                           images=str(frame_folder), settle_ms=0)
    assert counts["session"] == 1  # one model load for the stages and the end-to-end Detector
    # Per batch of 2: warm-up 1 + 3 timed pipeline rounds + 1 ready batch, each one prepare;
    # the end-to-end Detector runs the same stages (1 warm-up + 3 rounds); finish once per image.
    assert counts["prepare"] == (1 + 3 + 1) + (1 + 3)
    assert counts["run"] == (1 + 3) + (1 + 3)
    assert counts["finish"] == 2 * ((1 + 3) + (1 + 3))
    stages = report["results"][0]["stages"]
    assert stages["preprocess"]["n"] == stages["inference"]["n"] == stages["postprocess"]["n"] == 3

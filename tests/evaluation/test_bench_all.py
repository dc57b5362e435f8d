"""ffbench --backend all: every backend and precision that runs here, interleaved in one run
(the session's tiny real FastFlow). Needs nothing beyond the cpu extra; with the extra
`openvino` installed, OpenVINO's FP32 (and BF16 on a CPU with native BF16) are compared too."""

from __future__ import annotations

import json

import pytest


def test_all_backends_and_precisions_in_one_run(tiny_onnx, tmp_path, capsys):
    from ffeval.bench_cli import main
    from ffrt.backends import availability
    from ffrt.backends.base import precision_problem

    out = tmp_path / "all.json"
    assert main([str(tiny_onnx), "--backend", "all", "--batch", "1,2", "--iters", "3", "--warmup", "1",
                 "--threads", "1", "--settle-ms", "0", "--json", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["schema"] == "ffeval.bench-all"
    expected = {f"{n} fp32" for n, why in availability().items() if why is None}
    if precision_problem("openvino", "bf16") is None:
        expected.add("openvino bf16")
    assert set(r["configurations"]) == expected and "onnxruntime-cpu fp32" in expected
    for label, c in r["configurations"].items():  # named by the backend and the precision that ran
        assert label == f"{c['backend']} {c['precision']}"
    for row in r["results"]:
        assert set(row["configurations"]) == expected  # every configuration timed in every round
        for c in row["configurations"].values():
            assert c["inference"]["n"] == 3 and c["inference"]["p50_ms"] > 0
            assert 0 < c["fraction_of_precision_peak"] < 1  # below the stated peak of its own precision
    first = next(iter(r["results"][0]["configurations"].values()))
    assert first["speedup_vs_first"] == pytest.approx(1.0)
    text = capsys.readouterr().out
    assert "peak     fp32:" in text and "batch 2:" in text


def test_all_refuses_what_it_does_not_do(tiny_onnx, capsys):
    from ffeval.bench_cli import main

    assert main([str(tiny_onnx), "--backend", "all", "--plot", "x.png"]) == 1
    assert "--backend all compares the backends model-only" in capsys.readouterr().err

"""ffbench on the tiny real model: report schema and sanity of values, PNG, error paths.
No timed assertions: speed goals are shown by the scripts, never asserted."""

from __future__ import annotations

import json

import pytest

from ffeval.bench import SCHEMA, SCHEMA_VERSION, BenchError, parse_batches, postprocess
from ffeval.bench_cli import main

STAGE_KEYS = {"n", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "images_per_s"}


@pytest.fixture(scope="module")
def bench_run(tiny_onnx, tiny_checkpoint, frame_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = [str(tiny_onnx), "--backend", "onnxruntime-cpu", "--batch", "1,2", "--iters", "4", "--warmup", "1",
            "--threads", "1", "--images", str(frame_folder), "--json", str(out / "r.json"), "--plot",
            str(out / "r.png"), "--vs-torch", str(tiny_checkpoint), "--quiet"]
    rc = main(args)
    return rc, out


def test_report_schema_and_values(bench_run, tiny_onnx):
    rc, out = bench_run
    assert rc == 0
    r = json.loads((out / "r.json").read_text())
    assert r["schema"] == SCHEMA and r["schema_version"] == SCHEMA_VERSION == 1
    assert set(r) >= {"created_at", "command", "model", "backend", "machine", "macs", "settings", "results",
                      "load_average_1min"}
    m = r["model"]
    assert m["precision"] == "fp32" and m["input"] == {"height": 64, "width": 64, "layout": "NHWC uint8 RGB"}
    assert m["batch_max"] == 8 and len(m["sha256"]) == 64 and m["bytes"] == tiny_onnx.stat().st_size
    assert r["backend"]["name"] == "onnxruntime-cpu" and r["backend"]["threads"] == 1
    mach = r["machine"]
    assert mach["cpu"]["physical_cores"] >= 1 and "avx512f" in mach["cpu"]["flags"]
    assert mach["software"]["onnxruntime"] and mach["software"]["numpy"]
    peak = mach["cpu_peak"]
    assert peak["fp32_gflops"] == pytest.approx(
        peak["cores"] * peak["ghz"] * peak["fma_units"] * peak["fp32_lanes"] * 2)
    assert r["macs"]["per_image"] > 0 and r["macs"]["unresolved_nodes"] == []
    assert r["settings"]["images"].startswith("2 images from")  # max batch 2 frames loaded
    assert [row["batch"] for row in r["results"]] == [1, 2]
    for row in r["results"]:
        b = row["batch"]
        for stage in ("preprocess", "inference", "postprocess", "total"):
            s = row["stages"][stage]
            assert set(s) == STAGE_KEYS and s["n"] == 4
            assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
            assert s["images_per_s"] == pytest.approx(b * 1000 / s["mean_ms"])
        for part in ("h2d", "compute", "d2h"):
            assert row["stages"][part] == "n/a"  # CPU backend: no copies to split out
        st = row["stages"]
        assert st["total"]["mean_ms"] >= st["inference"]["mean_ms"]
        assert row["detector_end_to_end"]["n"] == 4
        assert row["achieved_gflops"] == pytest.approx(2 * r["macs"]["per_image"] * b / (st["inference"]["p50_ms"] / 1e3) / 1e9)
        assert 0 < row["fraction_of_cpu_peak"] < 1
        assert row["fraction_of_cpu_peak"] == pytest.approx(row["achieved_gflops"] / peak["fp32_gflops"])
        assert row["peak_rss_mb"] > 50
        t = row["torch_eager"]
        assert t["inference"]["n"] == 4
        assert t["ratio_p50"] == pytest.approx(t["inference"]["p50_ms"] / st["inference"]["p50_ms"])
    assert r["settings"]["torch"]["threads"] == 1


def test_plot_written(bench_run, read_png):
    _, out = bench_run
    img = read_png(out / "r.png")
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert (out / "r.json").stat().st_mode & 0o044  # readable by others, like any report


def test_table_printed(tiny_onnx, frame_folder, capsys):
    assert main([str(tiny_onnx), "--batch", "1", "--iters", "2", "--warmup", "0", "--images", str(frame_folder)]) == 0
    out, err = capsys.readouterr()
    assert "GMAC/image" in out and "CPU peak" in out and "x 2" in out
    assert "ffbench: batch 1" in err  # progress lines on stderr


def test_postprocess_matches_detector(tiny_onnx, frame_folder):
    """The bench's postprocess stage does what the Detector does."""
    import cv2
    import numpy as np

    from ffrt import Detector

    frame = cv2.imread(str(sorted(frame_folder.iterdir())[0]), cv2.IMREAD_UNCHANGED)
    det = Detector(tiny_onnx, backend="onnxruntime-cpu")
    ref = det(frame)
    det_small = Detector(tiny_onnx, backend="onnxruntime-cpu", resize_outputs=False)
    small = det_small(frame)
    score, anomalous, amap, mask = postprocess(small.anomaly_map[None, None], np.array([small.score]),
                                               [frame.shape[:2]], det.thresholds.image, det.thresholds.pixel)[0]
    assert score == pytest.approx(ref.score) and anomalous == ref.is_anomalous
    np.testing.assert_allclose(amap, ref.anomaly_map, rtol=1e-6, atol=1e-6)
    assert (mask == ref.mask).mean() > 0.999


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch", "0"], "--batch"),
        (["--batch", "1,x"], "--batch"),
        (["--batch", "16"], "batch_max 8"),
        (["--iters", "0"], "--iters"),
        (["--threads", "0"], "--threads"),
        (["--backend", "nope"], "unknown backend"),
        (["--vs-torch", "/nonexistent/model.pt"], "no such checkpoint"),
        (["--images", "/nonexistent/dir"], "no such folder"),
    ],
)
def test_error_paths(tiny_onnx, frame_folder, capsys, extra, message):
    args = [str(tiny_onnx), "--iters", "1", "--warmup", "0", "--batch", "1", "--images", str(frame_folder), "--quiet"]
    rc = main(args + extra)
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert err.startswith("ffbench: error:") and message in err and "\n" not in err


def test_bad_model_files(tmp_path, capsys):
    assert main([str(tmp_path / "missing.onnx")]) != 0
    assert "no such model file" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    assert main([str(bad)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("ffbench: error:") and "\n" not in err


def test_parse_batches():
    assert parse_batches("1, 2,8") == (1, 2, 8)
    with pytest.raises(BenchError):
        parse_batches("")

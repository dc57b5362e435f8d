"""ffbench on the tiny real model: report schema and sanity of values, PNG, error paths.
No timed assertions: speed goals are shown by the scripts, never asserted."""

from __future__ import annotations

import json

import pytest

from ffeval.bench import SCHEMA, SCHEMA_VERSION, BenchError, compute_rate, parse_batches, summarize
from ffeval.bench_cli import main
from ffeval.machine import RELEVANT_FLAGS, describe
from support.cpuinfo import EPYC_CPUINFO

STAGE_KEYS = {"n", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "images_per_s"}
CPU_STAGES = {"preprocess", "inference", "postprocess", "total"}


def _host_flags() -> set[str]:
    """This machine's CPU flags, read straight from /proc/cpuinfo (first entry)."""
    from pathlib import Path

    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


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
    assert r["schema"] == SCHEMA and r["schema_version"] == SCHEMA_VERSION == 3
    assert set(r) >= {"created_at", "command", "model", "backend", "machine", "macs", "settings", "results",
                      "load_average_1min"}
    m = r["model"]
    assert m["precision"] == "fp32" and m["input"] == {"height": 64, "width": 64, "layout": "NHWC uint8 RGB"}
    assert m["batch_max"] == 8 and len(m["sha256"]) == 64 and m["bytes"] == tiny_onnx.stat().st_size
    assert r["backend"]["name"] == "onnxruntime-cpu" and r["backend"]["threads"] == 1
    mach = r["machine"]
    host = _host_flags()
    assert mach["cpu"]["physical_cores"] >= 1
    assert mach["cpu"]["flags"] == {f: f in host for f in RELEVANT_FLAGS}  # this machine's, not a default
    assert mach["software"]["onnxruntime"] and mach["software"]["numpy"]
    peak = mach["cpu_peak"]
    assert peak["cores"] == mach["cpu"]["physical_cores"] and peak["ghz"] == pytest.approx(mach["cpu"]["mhz"] / 1000)
    assert peak["fp32_lanes"] == (16 if "avx512f" in host else 8 if "avx2" in host or "avx" in host else 4)
    assert r["macs"]["per_image"] > 0 and r["macs"]["unresolved_nodes"] == []
    assert r["settings"]["images"].startswith("2 images from")  # max batch 2 frames loaded
    assert [row["batch"] for row in r["results"]] == [1, 2]
    flop_per_image = []
    for row in r["results"]:
        st = row["stages"]
        assert set(st) == CPU_STAGES  # no h2d / compute / d2h: the CPU backend measures no copies
        for stage in CPU_STAGES:
            s = st[stage]
            assert set(s) == STAGE_KEYS and s["n"] == 4
            assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
            assert s["mean_ms"] <= s["max_ms"] and s["images_per_s"] > 0
        assert st["total"]["mean_ms"] >= st["inference"]["mean_ms"]
        assert row["detector_end_to_end"]["n"] == 4
        assert 0 < row["fraction_of_cpu_peak"] < 1
        # The work per image does not depend on the batch size.
        flop_per_image.append(row["achieved_gflops"] * st["inference"]["p50_ms"] / row["batch"])
        assert row["peak_rss_mb"] > 50
        t = row["torch_eager"]
        assert t["inference"]["n"] == 4 and t["ratio_p50"] > 0
        assert (t["ratio_p50"] > 1) == (t["inference"]["p50_ms"] > st["inference"]["p50_ms"])
    assert flop_per_image[0] == pytest.approx(flop_per_image[1], rel=1e-9)
    assert r["settings"]["torch"]["threads"] == 1


def test_summary_statistics_by_hand():
    # numpy's linear percentiles of 10, 20, 30, 40: p50 25, p90 30 + 0.7 * 10, p99 30 + 0.97 * 10.
    s = summarize([10.0, 40.0, 20.0, 30.0], batch=2)
    assert s == {"n": 4, "p50_ms": 25.0, "p90_ms": pytest.approx(37.0), "p99_ms": pytest.approx(39.7),
                 "max_ms": 40.0, "mean_ms": 25.0, "images_per_s": 80.0}  # 2 images per 25 ms


def test_rate_by_hand():
    # 1 GMAC per image, batch 2, 100 ms: 4 GFLOP in 0.1 s = 40 GFLOP/s, a quarter of a 160 GFLOP/s peak.
    assert compute_rate(10**9, 2, 100.0, 160.0) == (pytest.approx(40.0), pytest.approx(0.25))
    assert compute_rate(10**9, 2, 100.0, None) == (pytest.approx(40.0), None)
    assert compute_rate(10**9, 2, 0.0, 160.0) == (None, None)


def test_machine_is_read_from_cpuinfo(tmp_path):
    """Another machine's /proc/cpuinfo (AVX2, no AVX-512) is described as that machine."""
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(EPYC_CPUINFO)
    m = describe(root=tmp_path)
    cpu, peak = m["cpu"], m["cpu_peak"]
    assert cpu["model"] == "AMD EPYC 7B13" and cpu["hypervisor"] is True
    assert cpu["mhz"] == pytest.approx(2445.406) and cpu["mhz_source"] == "/proc/cpuinfo cpu MHz"
    assert {f for f, on in cpu["flags"].items() if on} == {"sse4_2", "avx", "avx2", "fma", "f16c"}
    assert (peak["simd_isa"], peak["fp32_lanes"], peak["fma_units"], peak["int8_vnni_gops"]) == ("AVX2", 8, 2, None)
    # 2.445406 GHz x 2 FMA units x 8 lanes x 2 FLOP = 78.26 GFLOP/s per core.
    assert peak["fp32_gflops"] == pytest.approx(78.2530 * cpu["physical_cores"], rel=1e-4)


def test_gpu_stages_appear_when_the_backend_measures_them(tiny_onnx, frame_folder, monkeypatch, tmp_path):
    """A backend with ``last_stage_ms`` (none ships yet: a stand-in over ONNX Runtime CPU
    reporting fixed copy times) gets h2d / compute / d2h stages with exactly those figures."""
    import json
    import time

    from ffrt.backends import BackendSpec
    from ffrt.backends import base
    from ffrt.backends.onnxruntime import OnnxRuntimeBackend

    class Staged(OnnxRuntimeBackend):
        def run(self, batch):
            t0 = time.perf_counter()
            out = super().run(batch)
            self.last_stage_ms = {"h2d": 0.25, "compute": (time.perf_counter() - t0) * 1e3, "d2h": 0.5}
            return out

    spec = BackendSpec("staged-cpu", lambda: None,
                       lambda path, meta, threads, device=0, **_: Staged("staged-cpu", path, meta, ["CPUExecutionProvider"], threads))
    monkeypatch.setitem(base._REGISTRY, "staged-cpu", spec)
    assert main([str(tiny_onnx), "--backend", "staged-cpu", "--batch", "1", "--iters", "3", "--warmup", "0",
                 "--threads", "1", "--images", str(frame_folder), "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    st = json.loads((tmp_path / "r.json").read_text())["results"][0]["stages"]
    assert set(st) == CPU_STAGES | {"h2d", "compute", "d2h"}
    assert st["h2d"]["p50_ms"] == 0.25 and st["d2h"]["max_ms"] == 0.5 and st["h2d"]["n"] == 3
    assert 0 < st["compute"]["p50_ms"] <= st["inference"]["max_ms"]


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


def test_vs_torch_with_a_broken_checkpoint_is_one_line(tiny_onnx, frame_folder, tmp_path, capsys):
    """The PyTorch side runs in `python -m fftrain.eager`; its failure reaches the user as one line."""
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = main([str(tiny_onnx), "--iters", "1", "--warmup", "0", "--batch", "1", "--images", str(frame_folder),
               "--vs-torch", str(bad), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("ffbench: error: --vs-torch") and "cannot load the checkpoint" in err
    assert "\n" not in err

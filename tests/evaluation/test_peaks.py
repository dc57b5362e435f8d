"""Measured CPU peaks (ffeval.peaks): the kernels really run, the cache per machine, the
nominal formula on given /proc/cpuinfo text, and the fields ffbench's report gets.
No timed assertions: a rate is checked for being a positive number, never for its size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ffeval import peaks
from ffeval.machine import describe
from support.cpuinfo import EPYC_CPUINFO, ZEN4_CPUINFO


def _machine(tmp_path, text: str, name: str) -> dict:
    root = tmp_path / name
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(text)
    return describe(root=root)


class CountingMeasure:
    """The real :func:`ffeval.peaks.measure` with short kernels, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, todo, threads):
        self.calls += 1
        return peaks.measure(todo, threads, seconds=0.02)


def test_second_call_reads_the_cache_and_a_new_key_measures_again(tmp_path):
    cache = tmp_path / "peaks.json"
    here = describe()
    counting = CountingMeasure()
    first = peaks.measured_peaks(here, cache, counting)
    assert counting.calls == 1 and first["from_cache"] is False
    fp32 = first["peaks"]["fp32"]
    assert fp32["gops"] > 0 and fp32["gops"] == max(k["gops"] for k in fp32["kernels"])
    assert {k["runtime"] for k in fp32["kernels"]} >= {"onnxruntime"}

    again = peaks.measured_peaks(here, cache, counting)
    assert counting.calls == 1 and again["from_cache"] is True
    assert again["peaks"] == first["peaks"] and again["measured_at"] == first["measured_at"]

    # Another CPU (its /proc/cpuinfo), another key: measured, and both machines kept.
    other = _machine(tmp_path, EPYC_CPUINFO, "epyc7b13")
    assert peaks.machine_key(other) != peaks.machine_key(here)
    third = peaks.measured_peaks(other, cache, counting)
    assert counting.calls == 2 and third["from_cache"] is False
    assert len(json.loads(cache.read_text())["entries"]) == 2

    # A new ONNX Runtime: its kernels may differ, so the figures are measured again.
    upgraded = {**here, "software": {**here["software"], "onnxruntime": "99.0.0"}}
    assert peaks.measured_peaks(upgraded, cache, counting)["from_cache"] is False and counting.calls == 3
    # The first machine's entry is still there.
    assert peaks.measured_peaks(here, cache, counting)["from_cache"] is True and counting.calls == 3


def test_a_damaged_cache_is_measured_again_not_an_error(tmp_path):
    cache = tmp_path / "peaks.json"
    cache.write_text("{not json")
    counting = CountingMeasure()
    got = peaks.measured_peaks(describe(), cache, counting)
    assert counting.calls == 1 and got["peaks"]["fp32"]["gops"] > 0
    assert json.loads(cache.read_text())["entries"]  # rewritten whole


def test_what_is_measured_follows_the_flags(tmp_path):
    avx2 = _machine(tmp_path, EPYC_CPUINFO, "avx2")["cpu"]["flags"]
    todo = peaks.plan(avx2, openvino_problem=None, bf16_problem=None)
    assert todo["fp32"] == ["onnxruntime", "openvino"]
    assert "AVX512-BF16" in todo["bf16"] and "VNNI" in todo["int8"]  # reasons, not runtimes
    zen4 = _machine(tmp_path, ZEN4_CPUINFO, "zen4")["cpu"]["flags"]
    todo = peaks.plan(zen4, openvino_problem=None, bf16_problem=None)
    assert todo == {"fp32": ["onnxruntime", "openvino"], "bf16": ["openvino"], "int8": ["onnxruntime"]}
    no_ov = peaks.plan(zen4, openvino_problem="OpenVINO is not installed", bf16_problem=None)
    assert no_ov["fp32"] == ["onnxruntime"] and "OpenVINO is not installed" in no_ov["bf16"]


def test_int8_kernels_run_and_count_their_macs():
    # Each kernel's multiply-accumulates by hand: 256 x 256 x 3 x 3 x 28 x 28, 256 x 256 x 56 x 56, 1024^3.
    assert [k.macs for k in peaks.kernels(int8=True)] == [462_422_016, 205_520_896, 1_073_741_824]
    assert [k.macs for k in peaks.kernels(int8=False)] == [462_422_016, 205_520_896, 1_073_741_824]
    got = peaks.measure({"fp32": "skipped here", "bf16": "skipped here", "int8": ["onnxruntime"]}, 1, seconds=0.01)
    assert got["fp32"] == {"gops": None, "why_not": "skipped here"}
    ops = {k["kernel"].split(",")[0] for k in got["int8"]["kernels"]}
    assert ops == {"int8 conv 3x3", "int8 conv 1x1", "int8 matmul 1024x1024x1024"}
    assert all(k["gops"] >= k["median_gops"] > 0 and k["calls"] >= 1 for k in got["int8"]["kernels"])


def test_nominal_formula_beside_the_measured_figure(tmp_path):
    """On a given /proc/cpuinfo (Zen 4: AVX-512, BF16, VNNI) the nominal figures are the
    formula's, written out with that CPU's numbers, and the measured ones sit beside them."""
    m = _machine(tmp_path, ZEN4_CPUINFO, "zen4")
    cores = m["cpu"]["physical_cores"]
    measured = {"measured_at": "2026-01-01T00:00:00+00:00", "threads": cores, "from_cache": True, "cache": "x.json",
                "load_average_1min": 0.5, "peaks": {
                    "fp32": {"gops": 150.0, "kernel": "conv 1x1", "runtime": "onnxruntime"},
                    "bf16": {"gops": 300.0, "kernel": "conv 3x3", "runtime": "openvino"},
                    "int8": {"gops": None, "why_not": "the CPU has no VNNI"}}}
    by = peaks.peaks_by_precision(m, measured)
    # 2.59615 GHz x 2 FMA units x 16 lanes x 2 FLOP = 166.15 G per core; BF16 2x that, INT8 (VNNI) 4x.
    assert by["fp32"]["nominal_gops"] == pytest.approx(166.1536 * cores, rel=1e-5)
    assert by["bf16"]["nominal_gops"] == pytest.approx(2 * 166.1536 * cores, rel=1e-5)
    assert by["int8"]["nominal_gops"] == pytest.approx(4 * 166.1536 * cores, rel=1e-5)
    assert by["fp32"]["nominal_formula"] == f"{cores} cores x 2.596 GHz x 2 FMA units x 16 lanes x 2"
    assert by["fp32"]["measured_gops"] == 150.0 and by["fp32"]["measured_by"] == "conv 1x1 on onnxruntime"
    assert by["fp32"]["measured_over_nominal"] == pytest.approx(150.0 / (166.1536 * cores), rel=1e-5)
    assert by["int8"]["measured_gops"] is None and by["int8"]["why_not_measured"] == "the CPU has no VNNI"
    text = "\n".join(peaks.peak_lines(by, measured))
    assert f"peak     fp32: measured 150 G ops/s (conv 1x1 on onnxruntime" in text
    assert f"nominal {166.1536 * cores:.0f} = {cores} cores x 2.596 GHz x 2 FMA units x 16 lanes x 2" in text
    assert "peak     int8: not measured (the CPU has no VNNI)" in text and "cached from 2026-01-01" in text


def test_the_peak_a_run_is_held_to():
    by = {"fp32": {"measured_gops": 100.0}, "bf16": {"measured_gops": 300.0}, "int8": {"measured_gops": 800.0}}
    assert peaks.peak_used(by, "fp32") == ("fp32", 100.0)
    assert peaks.peak_used(by, "bf16") == ("bf16", 300.0)
    assert peaks.peak_used(by, "int8+bf16") == ("bf16", 300.0)  # its float part ran BF16
    assert peaks.peak_used(by, "int8") == ("fp32", 100.0)  # only some convolutions are INT8
    assert peaks.peak_used({"fp32": {"measured_gops": None}}, "fp32") == ("fp32", None)


def test_ffbench_reports_measured_peaks_beside_the_nominal(tiny_onnx, frame_folder, tmp_path, monkeypatch):
    """ffbench's JSON (schema v3): machine.cpu_peak keeps the nominal FP32 fields and gets the
    measured peak per precision; the rows' % of peak is against the measured FP32 peak."""
    from ffeval.bench import SCHEMA_VERSION
    from ffeval.bench_cli import main

    monkeypatch.setenv("FFRT_ENGINE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.json"
    assert main([str(tiny_onnx), "--backend", "onnxruntime-cpu", "--batch", "1", "--iters", "2", "--warmup", "0",
                 "--images", str(frame_folder), "--json", str(out), "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["schema_version"] == SCHEMA_VERSION == 3
    peak = r["machine"]["cpu_peak"]
    assert peak["fp32_gflops"] == pytest.approx(r["machine"]["cpu_peak_by_precision"]["fp32"]["gops"])
    assert peak["measured"]["from_cache"] is False and peak["measured"]["cache"] == str(tmp_path / "cache" / peaks.CACHE_NAME)
    assert peak["measured"]["key"] == peaks.machine_key(r["machine"])
    by = peak["by_precision"]
    assert set(by) == set(peaks.PRECISIONS)
    fp32 = by["fp32"]
    assert fp32["measured_gops"] == peak["measured"]["peaks"]["fp32"]["gops"] > 0
    assert fp32["nominal_gops"] == pytest.approx(peak["fp32_gflops"])
    flags = r["machine"]["cpu"]["flags"]
    assert (by["int8"]["measured_gops"] is not None) == any(flags[f] for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    row = r["results"][0]
    assert row["peak_used"] == "fp32"
    assert row["fraction_of_cpu_peak"] == pytest.approx(row["achieved_gflops"] / fp32["measured_gops"], rel=1e-9)
    # Run again: the figures come from the cache, unchanged.
    assert main([str(tiny_onnx), "--backend", "onnxruntime-cpu", "--batch", "1", "--iters", "1", "--warmup", "0",
                 "--images", str(frame_folder), "--json", str(out), "--quiet"]) == 0
    again = json.loads(out.read_text())["machine"]["cpu_peak"]
    assert again["measured"]["from_cache"] is True and again["by_precision"] == by
    assert np.isfinite(again["by_precision"]["fp32"]["measured_over_nominal"])

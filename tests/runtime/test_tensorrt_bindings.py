"""ffrt against the GENUINE TensorRT Python bindings of the 10.x and 11.x lines, on a GPU-less host.

What is real here and what is not (tests/support/trtenv.py installs and builds it):

* real: the ``tensorrt`` / ``tensorrt_bindings`` Python packages of TensorRT 10.16.1.11 (the
  gpu extra's pin) and 11.4.0.106 from PyPI, and NVIDIA's cuda-python driver bindings
  (cuda-bindings 13.4.4) — the code ffrt calls into, with its real signatures, docstrings,
  enums, exceptions and pybind11 behaviour;
* stand-ins: the native libraries the bindings load. libnvinfer & co. are a stub that fails
  CUDA initialisation the way TensorRT does without a usable GPU (logs "CUDA
  initialization failure with error: 35", returns nullptr: the bindings raise ``TypeError:
  pybind11::init(): factory function returned nullptr``); libcuda.so.1 is either absent (the
  real state of this machine: cuda-python's own "driver not found" error) or a CPU
  stand-in that reports one GPU.

No test here builds or runs a TensorRT engine, and none claims to.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import trt_scenarios  # noqa: E402
import trtenv  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(trt_scenarios.__file__)
LINES = sorted(trtenv.TRT_LINES)


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=LINES, ids=[f"trt{m}" for m in LINES])
def line(request):
    return trtenv.tensorrt_line(request.param)


# -- (a) every TensorRT name and signature ffrt uses exists in both lines ----------------------


def test_api_ffrt_uses_exists(line, cuda_site):
    r = _json(trtenv.run(SCENARIOS, "api", sites=[line["site"], cuda_site], libs=[line["libs"]]))
    assert r["version"] == line["version"]
    assert r["missing"] == [] and r["mismatched"] == []
    assert r["logger"] is True  # ffrt's recording ILogger subclass works with these bindings
    # What the issue relies on, read from the bindings themselves:
    assert r["topk_limit_3840"], "add_topk/ITopKLayer docstrings no longer state K <= 3840"
    assert r["tf32_default_on"], "BuilderFlag.TF32 is no longer documented as enabled by default"
    if line["version"].startswith("11."):
        assert "Strongly typed mode is always enabled" in r["strongly_typed_doc"]


def test_the_checked_list_covers_every_trt_name_in_ffrt():
    used = set()
    for path in (ROOT / "runtime" / "ffrt").rglob("*.py"):
        used |= set(re.findall(r"(?<![-\w.])trt\.([A-Za-z_]\w*)", path.read_text()))
    covered = set(trt_scenarios.MODULE) | {o for o, _ in trt_scenarios.ENUMS} | {"INetworkDefinition", "ITopKLayer"}
    assert used, "no trt.<name> found: the scan is broken"
    assert used <= covered, f"TensorRT names used by ffrt but not checked against the bindings: {sorted(used - covered)}"


# -- (b) the real failure paths ---------------------------------------------------------------


@pytest.fixture(scope="module")
def stations(tmp_path_factory, models):
    d = tmp_path_factory.mktemp("station")
    model = d / "model.onnx"
    model.write_bytes(Path(models["red"]).read_bytes())
    return d, model


def test_no_driver_auto_falls_back_and_export_says_one_line(line, cuda_site, stations):
    """This machine as it is (no libcuda.so.1) with the gpu extra's Python packages installed."""
    d, model = stations
    env = dict(sites=[line["site"], cuda_site], libs=[line["libs"]])
    r = _json(trtenv.run(SCENARIOS, "auto", str(model), str(d / "cache"), **env))
    assert r["backend"] in ("onnxruntime-cpu", "openvino") and r["score"] == pytest.approx(0.0)
    first = r["selection"][0]
    assert first.startswith("tensorrt: no usable NVIDIA GPU (cuda-python: no NVIDIA driver here"), first
    assert "R580" in first
    proc = _module("ffexport.tensorrt", str(model), **env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("ffexport: error: cannot build the TensorRT engine here: no usable NVIDIA GPU")
    assert "python -m ffexport.tensorrt" in lines[0]


def _module(name: str, *args: str, **kw):
    script = Path(__file__).resolve().parents[1] / "support" / "run_module.py"
    return trtenv.run(script, name, *args, **kw)


def test_driver_reports_a_gpu_but_tensorrt_cannot_start_cuda(line, cuda_site, fake_driver, stations):
    """A driver that lists a GPU but too old for this TensorRT's CUDA (or a GPU in a bad state):
    cuda-python works, trt.Builder / trt.Runtime return nullptr."""
    d, model = stations
    env = dict(sites=[line["site"], cuda_site], libs=[line["libs"], fake_driver])
    r = _json(trtenv.run(SCENARIOS, "auto", str(model), str(d / f"cache{line['version']}"), **env))
    assert r["backend"] in ("onnxruntime-cpu", "openvino"), r
    first = r["selection"][0]
    assert first.startswith(f"tensorrt: TensorRT {line['version']} could not initialise CUDA on GPU 0 (trt.Builder failed;")
    if line["version"].startswith("10."):
        assert "TensorRT said: CUDA initialization failure with error: 35" in first
    else:
        assert "factory function returned nullptr" in first
    assert "R580" in first and "ffrt doctor" in first
    assert r["fake_driver"] == [0, 0, 0, 0, 0]  # nothing allocated, the primary context released

    # An explicit engine (sidecar for this TensorRT and the reported GPU): trt.Runtime fails the same way.
    plan = _engine(d / f"model{line['version']}.engine", line["version"], model)
    r = _json(trtenv.run(SCENARIOS, "engine", str(plan), **env))
    assert r["error"] == "BackendUnavailableError", r
    assert "could not initialise CUDA on GPU 0 (trt.Runtime failed;" in r["message"]
    assert r["fake_driver"] == [0, 0, 0, 0, 0]

    proc = _module("ffexport.tensorrt", str(model), **env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    err = [x for x in proc.stderr.strip().splitlines() if x.startswith("ffexport:")]
    assert len(err) == 1 and "could not initialise CUDA on GPU 0" in err[0]

    proc = _module("ffrt.cli", "doctor", **env)
    assert proc.returncode == 0, proc.stderr
    assert "Fake GPU 0 (CPU stand-in) (sm86" in proc.stdout
    assert f"{line['version']}, libnvinfer.so.{line['version'].split('.')[0]}" in proc.stdout
    assert "does NOT start: TensorRT" in proc.stdout


def _engine(path: Path, version: str, onnx_path: Path) -> Path:
    import hashlib

    from ffrt.tensorrt.plan import BatchProfile, EngineInfo, graph_sha256, write_engine
    from ffrt.metafile import read_onnx_meta

    plan = b"not a real plan: the runtime fails before deserializing it" * 4
    meta = read_onnx_meta(onnx_path)
    info = EngineInfo(tensorrt_version=version, gpu_name="Fake GPU 0 (CPU stand-in)", compute_capability="8.6",
                      graph_sha256=graph_sha256(onnx_path), source_onnx=str(onnx_path), plan_sha256=hashlib.sha256(plan).hexdigest(),
                      precision="fp32", profile=BatchProfile(min=1, opt=1, max=4), tf32=False,
                      built_at="2026-01-01T00:00:00+00:00", meta=meta.model_copy(update={"batch_max": 4}))
    return write_engine(path, plan, info)


def test_ffexport_engine_flag_on_a_driverless_host(cuda_site, tiny_checkpoint, tmp_path):
    """The whole ffexport --engine, TensorRT 10 bindings installed, no driver: ONNX written, exit 2, one line."""
    line = trtenv.tensorrt_line("10")
    proc = _module("ffexport.cli", "--no-bf16", "--ckpt", str(tiny_checkpoint), "--out", str(tmp_path), "--batch-max", "4",
                   "--engine", sites=[line["site"], cuda_site], libs=[line["libs"]])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (tmp_path / "model.onnx").is_file() and "Traceback" not in proc.stderr
    err = [x for x in proc.stderr.strip().splitlines() if x.startswith("ffexport: error:")]
    assert len(err) == 1 and "no NVIDIA driver here" in err[0] and "--device" not in err[0]

"""The CUDA host API (ffrt.tensorrt.cudahost) and the native backend's GPU resource handling.

cuda-python runs for real: the genuine cuda-bindings wheel (the gpu extra's pin), on this
machine's real state (no NVIDIA driver) and on a CPU stand-in driver (tests/support/
fake_libcuda.c) that reports a GPU and checks contexts and handles like the driver does.
TensorRT's engine is a stand-in (tests/support/backend_cycles.py): what is tested is ffrt's
slot, run and close logic around it, not TensorRT. pycuda cannot be installed here (no CUDA
toolkit): every pycuda name ffrt calls is checked against pycuda 2026.1's source.
On a GPU host scripts/gpu/check_tensorrt.py measures the same 100 create/close cycles on real memory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import trtenv  # noqa: E402
from envskip import unavailable  # noqa: E402

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def _last_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_backend_cycles_release_order_and_slots(cuda_site, fake_driver):
    r = _last_json(trtenv.run(SUPPORT / "backend_cycles.py", sites=[cuda_site], libs=[fake_driver]))
    # 100 create/run/close cycles leave nothing: device buffers, pinned buffers, streams, contexts.
    assert r["cycles_stats"] == [0, 0, 0, 0, 0] and r["scores_ok"]
    # Polygraphy's order: per slot device buffers, pinned buffers, stream, execution context;
    # then the engine, the runtime, and the CUDA context last.
    per_slot = ["mem_free"] * 3 + ["host_free"] * 3 + ["stream_destroy", "exec_ctx_del"]
    assert r["close_log"] == per_slot * 2 + ["engine_del", "runtime_del", "ctx_release"]
    assert "closed" in r["run_after_close"]
    # A failed push returns the slot (issue 11 item 5): the next call runs at once.
    assert r["push_failure"].startswith("CUDA failed on GPU 0 during inference (cuCtxPushCurrent failed")
    assert r["after_push_failure"] == pytest.approx(51 / 255) and r["after_push_failure_s"] < 1.0
    assert r["execute_failure"].startswith("TensorRT execute_async_v3 failed")
    # TensorRT keeps one logger per process: an error quotes only its own thread's message.
    assert r["execute_failure_quotes"] == "TensorRT execute_async_v3 failed: stand-in: this execution failed"
    # close() while a call waits for the only slot (held by a 2 s call): the wait ends at once.
    assert "closed" in r["wait_during_close"] and r["wait_during_close_s"] < 1.0
    assert r["after_execute_failure"] == pytest.approx(102 / 255) and r["depth_after_calls"] == 0
    assert r["thread_errors"] == []
    assert "could not create an execution context" in r["start_failure"]
    assert r["final_stats"] == [0, 0, 0, 0, 0]  # a half-started backend and a dropped one freed everything


SNIPPET = r"""
import json, numpy as np
from ffrt.tensorrt import cudahost
out = {}
try:
    api = cudahost.host_api()
    out["api"] = api.name
    out["count"] = api.device_count()
    out["device"] = api.device(0).__dict__
    ctx = api.open(0)
    try:
        ctx.alloc(16)
    except cudahost.CudaError as e:
        out["alloc_without_context"] = str(e)
    with ctx.active():
        a = ctx.alloc_pinned(5, np.float32); a[:] = [1, 2, 3, 4, 5]
        d = ctx.alloc(a.nbytes); s = ctx.create_stream()
        b = ctx.alloc_pinned(5, np.float32)
        ctx.htod_async(d, a, s); ctx.dtoh_async(b, d, s); ctx.synchronize(s)
        out["roundtrip"] = b.tolist()
        ctx.free(d); ctx.free_pinned(a); ctx.free_pinned(b); ctx.destroy_stream(s)
    ctx.release()
    try:
        api.device(3)
    except cudahost.CudaError as e:
        out["bad_index"] = str(e)
except cudahost.CudaError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_cuda_python_on_the_stand_in_driver(cuda_site, fake_driver, tmp_path):
    script = tmp_path / "s.py"
    script.write_text(SNIPPET)
    r = _last_json(trtenv.run(script, sites=[cuda_site], libs=[fake_driver]))
    assert r["api"] == "cuda-python" and r["count"] == 1
    assert r["device"]["name"] == "Fake GPU 0 (CPU stand-in)" and r["device"]["compute_capability"] == "8.6"
    assert r["alloc_without_context"] == "cuMemAlloc failed: CUDA_ERROR_INVALID_CONTEXT (invalid device context)"
    assert r["roundtrip"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert r["bad_index"] == "device 3 does not exist: this machine has 1 GPU(s) (0..0)"


def test_cuda_python_on_this_driverless_machine(cuda_site, tmp_path):
    script = tmp_path / "s.py"
    script.write_text(SNIPPET)
    r = _last_json(trtenv.run(script, sites=[cuda_site], libs=[]))
    assert r["api"] == "cuda-python"
    assert r["error"].startswith("no NVIDIA driver here (libcuda.so.1 could not be loaded:")
    assert "R580" in r["error"]


def test_host_api_choice_and_what_to_install(monkeypatch):
    from ffrt.tensorrt import cudahost

    monkeypatch.setattr(cudahost, "_instances", {})
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setenv(cudahost.ENV, "pycuda")
    assert cudahost.preferred() == ("pycuda", "cuda-python")
    try:
        import cuda.bindings.driver  # noqa: F401
        has_cuda_python = True
    except ImportError:
        has_cuda_python = False
    if has_cuda_python:  # pycuda asked for but absent: cuda-python is used
        assert cudahost.host_api().name == "cuda-python"
    monkeypatch.setattr(cudahost, "_instances", {})
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", None)
    with pytest.raises(cudahost.CudaError, match=r"no CUDA host API: pycuda is not installed .*cuda-python is not "
                       r"installed .*ffrt\[gpu\].*ffrt\[pycuda\]"):
        cudahost.host_api()


# Every pycuda name ffrt.tensorrt.cudahost.PyCudaApi uses, and where pycuda 2026.1 defines it.
PYCUDA_NAMES = {
    "src/wrapper/wrap_cudadrv.cpp": [
        'py::def("init"', 'py::def("get_driver_version"', '.staticmethod("count")', '"retain_primary_context"',
        '.def("push"', '.staticmethod("pop")', "DEF_SIMPLE_METHOD(detach)", 'py::def("mem_alloc"',
        'py::def("pagelocked_empty"', 'py::def("memcpy_htod_async"', 'py::def("memcpy_dtoh_async"',
        "DEF_SIMPLE_FUNCTION(mem_get_info)", "DEF_SIMPLE_METHOD(compute_capability)", "DEF_SIMPLE_METHOD(total_memory)",
        "DEF_SIMPLE_METHOD(name)", '.add_property("handle"', '.def("synchronize"', "DEF_SIMPLE_METHOD(free)",
    ],
    "pycuda/__init__.py": ["VERSION_TEXT"],
}


def test_pycuda_names_exist_in_pycuda_source(tmp_path):
    target = trtenv.cache_root() / "pycuda-src"
    sdist = next(iter(sorted(target.glob("pycuda-2026.1.tar.gz"))), None)
    if sdist is None:
        target.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                               "--no-build-isolation", "-d", str(target), "pycuda==2026.1"],
                              capture_output=True, text=True, timeout=600)
        sdist = next(iter(sorted(target.glob("pycuda-2026.1.tar.gz"))), None)
        if sdist is None:
            unavailable(f"could not download the pycuda 2026.1 source from PyPI ({' '.join(proc.stderr.split()[-30:])})")
    with tarfile.open(sdist) as tar:
        texts = {rel: tar.extractfile(f"pycuda-2026.1/{rel}").read().decode() for rel in PYCUDA_NAMES}
    missing = [f"{rel}: {name}" for rel, names in PYCUDA_NAMES.items() for name in names if name not in texts[rel]]
    assert missing == []
    # pycuda.driver.Error is the base of every CUDA failure ffrt catches.
    assert re.search(r"\bError\b", texts["src/wrapper/wrap_cudadrv.cpp"])
    # And every pycuda attribute cudahost reads is in that list.
    src = (Path(__file__).resolve().parents[2] / "runtime" / "ffrt" / "tensorrt" / "cudahost.py").read_text()
    used = set(re.findall(r"self\._drv\.(\w+)", src)) | set(re.findall(r"_drv\.(\w+)", src))
    listed = " ".join(n for names in PYCUDA_NAMES.values() for n in names)
    unlisted = {u for u in used if f'"{u}"' not in listed and f"({u})" not in listed}
    assert unlisted <= {"Device", "Context", "Error", "Stream"}, unlisted

"""The GPU checks (scripts/gpu/): a bundle written on this CPU machine from the tiny real model,
and both check scripts run on it here, where there is no GPU: the steps that need one report
SKIP with their reason, the others run for real, and the script exits 0 (1 when a step fails)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "gpu"


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bundle.py"), "--ckpt", str(tiny_checkpoint), "--out", str(out),
                           "--images", "6", "--no-int8", "--site-python", ""], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out


def _run(script: str, bundle: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), str(bundle), *args], capture_output=True, text=True,
                          timeout=600)
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    report = json.loads((out / "report.json").read_text()) if out else {}
    return proc, report


def test_bundle_holds_the_files_their_hashes_and_onnxruntime_references(bundle, tiny_checkpoint):
    import onnxruntime as ort

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["models"]) == {"model.onnx", "model.fp16.onnx"}
    assert manifest["models"]["model.fp16.onnx"]["precision"] == "fp16" and manifest["batch_max"] == 32
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert (bundle / "model.pt").read_bytes() == tiny_checkpoint.read_bytes()
    images = np.load(bundle / "images.npy")
    assert images.dtype == np.uint8 and images.shape[0] == 6
    # The references are what ONNX Runtime CPU computes on those images, recomputed here.
    sess = ort.InferenceSession(str(bundle / "models" / "model.fp16.onnx"), providers=["CPUExecutionProvider"])
    maps, scores = sess.run(None, {"image": images})
    ref = np.load(bundle / "reference" / "model.fp16.npz")
    np.testing.assert_allclose(ref["scores"], scores, rtol=1e-5)
    np.testing.assert_allclose(ref["maps"], maps, rtol=1e-5, atol=1e-6)


def test_tensorrt_check_without_a_gpu(bundle, tmp_path):
    proc, report = _run("check_tensorrt.py", bundle, "--out", str(tmp_path / "r"), "--seconds-per-timing", "0.1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[1].startswith("machine: ")
    status = {r["step"]: (r["status"], r["detail"]) for r in report["steps"]}
    assert status["bundle"][0] == "PASS" and status["graph check"][0] == "PASS", status
    gpu_steps = {k: v for k, v in status.items() if k not in ("bundle", "graph check")}
    assert {"tensorrt", "build model.onnx", "build model.fp16.onnx", "parity model.onnx", "parity model.fp16.onnx",
            "onnxruntime tensorrt provider", "threads", "create/close cycles", "timing"} == set(gpu_steps)
    assert all(s == "SKIP" and detail for s, detail in gpu_steps.values()), gpu_steps
    assert "nvidia-smi" in status["tensorrt"][1] and report["verdict"] == "INCOMPLETE"


def test_tensorrt_check_fails_a_changed_bundle(bundle, tmp_path):
    copy = tmp_path / "bundle"
    import shutil

    shutil.copytree(bundle, copy)
    images = np.load(copy / "images.npy")
    images[0, 0, 0, 0] ^= 1
    np.save(copy / "images.npy", images)
    proc, report = _run("check_tensorrt.py", copy, "--out", str(tmp_path / "r"))
    assert proc.returncode == 1, proc.stdout
    first = report["steps"][0]
    assert first["status"] == "FAIL" and "images.npy changed" in first["detail"] and report["verdict"] == "FAIL"
    assert "FAIL  bundle: images.npy changed" in proc.stdout


def test_cuda_check_without_a_gpu(bundle, tmp_path):
    proc, report = _run("check_cuda.py", bundle, "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[1].startswith("machine: ")
    steps = report["steps"]
    assert [r["step"] for r in steps] == ["cuda driver", "memory cycles", "pinned copy bandwidth",
                                          "pytorch eager fused model"]
    assert all(r["status"] == "SKIP" and r["detail"] for r in steps), steps
    assert report["verdict"] == "INCOMPLETE" and (tmp_path / "r" / "report.txt").is_file()


def test_leak_verdict_bounds_the_memory_not_returned():
    sys.path.insert(0, str(SCRIPTS))
    from steps import LEAK_MIB, leak_verdict

    figures: dict = {}
    assert "15.9 MiB of device memory not returned" in leak_verdict(figures, "k", 1000.0, 984.1, 100, "cycles")
    assert figures["k"] == {"free_mib_before": 1000.0, "free_mib_after": 984.1} and LEAK_MIB == 16.0
    with pytest.raises(AssertionError, match="16.1 MiB not returned after 100 cycles"):
        leak_verdict(figures, "k", 1000.0, 983.9, 100, "cycles")

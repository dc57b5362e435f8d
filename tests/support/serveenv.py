"""The environment ``ffrt serve`` runs in, made by the tests when the project's is not it.

PyTriton 0.7.0 (the ``serve`` extra) requires numpy < 2, so it cannot share the project's
virtual environment (numpy 2, torch). This module makes one from the project's own Python
(the same interpreter build, so the Triton Python-backend stub loads a matching libpython:
``ffrt.triton.serve``): ``python -m venv`` under the tests' cache, then ``pip install`` of
the runtime's dependencies and the cpu and serve extras, read from pyproject.toml. ffrt
itself is not installed there: the server runs this checkout's packages (PYTHONPATH).
Cached per pin list and interpreter; a failed install is removed and the test skipped
with a reason naming the extra.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

import trtenv
from envskip import unavailable

ROOT = trtenv.ROOT
#: Triton metrics the deployment files use; test_triton_serve checks the real server exports them.
TRITON_METRICS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_queue_duration_us",
                  "nv_inference_count", "nv_inference_exec_count")


def serve_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["cpu"], *extras["serve"]]


def serve_python() -> str:
    """A Python that can run ``ffrt serve``: this one if PyTriton imports here, else the venv."""
    probe = subprocess.run([sys.executable, "-c", "import pytriton"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    reqs = serve_requirements()
    key = hashlib.sha256(json.dumps([reqs, sys.version]).encode()).hexdigest()[:12]
    venv = trtenv.keyed_cache_entry("serve-venv", key)
    py = venv / "bin" / "python"
    if (venv / ".ffrt-ok").is_file():
        return str(py)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    try:
        proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs],
                              capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        shutil.rmtree(venv, ignore_errors=True)
        unavailable('the "serve" extra: pip install timed out (package registry unreachable?)')
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        unavailable(f'could not install the "serve" extra into a venv: {" ".join(proc.stderr.split()[-40:])}')
    (venv / ".ffrt-ok").write_text("ok")
    return str(py)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


class Server:
    """``ffrt serve MODEL`` on free loopback ports, in the serve environment."""

    def __init__(self, model: Path, log: Path, *args: str, token: str = "ffrt-test-token",
                 address: str | None = "127.0.0.1", ports: tuple[int, int, int] | None = None):
        """``address`` None: ffrt serve's default; ``ports``: (HTTP, gRPC, metrics), default free ones."""
        self.http, self.grpc, self.metrics = ports or free_ports(3)
        self.token = token
        self.log = log
        self.python = serve_python()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
        env["PYTHONPATH"] = os.pathsep.join(trtenv.PACKAGES)
        self.cmd = [self.python, "-m", "ffrt", "serve", str(model), *(["--address", address] if address else []),
                    "--http-port", str(self.http), "--grpc-port", str(self.grpc),
                    "--metrics-port", str(self.metrics), "--access-token", token, *args]
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(ROOT), start_new_session=True)

    def wait_ready(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"ffrt serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            ready = [_get(f"http://127.0.0.1:{self.http}/v2/models/{m}/ready")[0] for m in ("ffrt_model", "ffrt_detector")]
            if ready == [200, 200] and b"ffrt serve:" in self.log.read_bytes():
                return
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"ffrt serve was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_bytes().decode(errors="replace").replace("\x00", "")[-chars:]

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        return _get(f"http://127.0.0.1:{port or self.http}{path}")

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT, what Ctrl-C sends
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=30)
        self._log_file.close()
        return self.proc.returncode

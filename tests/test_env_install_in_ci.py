"""A test environment that cannot be installed skips locally and fails under CI=true
(issue 23): otherwise ``make test`` in CI passes with the Triton, TensorRT-bindings,
CUDA-host and packaging tests silently skipped.

A real pip install of a requirement that cannot be installed (a wheel file that does not
exist: no network needed to fail), through the real helper, in a real pytest run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parent / "support"

_PROBE = """
import sys
sys.path.insert(0, {support!r})
import trtenv

def test_needs_an_environment(tmp_path):
    trtenv._pip_target(tmp_path / "site", [str(tmp_path / "ffrt_missing-0.0.0-py3-none-any.whl")], "probe env")
"""


def _run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    probe = tmp_path / "test_probe.py"
    probe.write_text(_PROBE.format(support=str(SUPPORT)))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", str(probe)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("ci", [None, "false"], ids=["CI-unset", "CI=false"])
def test_a_failed_install_skips_outside_ci(tmp_path, ci):
    proc = _run_probe(tmp_path, ci)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "1 skipped" in proc.stdout and "probe env: could not pip install" in proc.stdout


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_a_failed_install_fails_the_run_under_ci(tmp_path, ci):
    proc = _run_probe(tmp_path, ci)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "1 failed" in proc.stdout and "skipped" not in proc.stdout
    assert "probe env: could not pip install" in proc.stdout and "CI=true" in proc.stdout

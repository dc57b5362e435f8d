"""The peers' own virtual environment: anomalib, OpenVINO, ONNX Runtime and ffrt's dependencies.

Standard library only: this runs under whatever Python started ``run_peers.py``. The
environment lives in ``benchmarks/peers/.venv`` (git-ignored), is built from the package
registry with the pins in ``requirements.txt`` plus ffrt's own dependencies read from
``pyproject.toml`` (base, ``cpu``, ``openvino``, ``train`` and ``demo`` extras), and is stamped with a hash of both
files so that an edit to either rebuilds it. ffrt itself is not installed into it: the
timing process puts this checkout's package folders on ``PYTHONPATH``, so it always times
the code next to the script.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = HERE / ".venv"
REQUIREMENTS = HERE / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"
#: Extras of ffrt the timing and model-building code needs: ONNX Runtime, OpenVINO, torch for
#: fftrain/ffexport (pinned there and in requirements.txt alike), and the ELPV cells the ffrt
#: model is trained on for one epoch and every engine is timed on.
FFRT_EXTRAS = ("cpu", "openvino", "train", "demo")


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ffrt_requirements() -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in FFRT_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return reqs


def _stamp() -> str:
    h = hashlib.sha256()
    h.update(REQUIREMENTS.read_bytes())
    h.update("\n".join(ffrt_requirements()).encode())
    return h.hexdigest()[:16]


def _stamp_file() -> Path:
    return VENV / f".peers-installed-{_stamp()}"


def is_ready() -> bool:
    return venv_python().is_file() and _stamp_file().is_file()


def package_paths() -> list[str]:
    """This checkout's package roots (what ``pip install -e .`` would map)."""
    return [str(ROOT / d) for d in ("core", "runtime", "trainer", "export", "calibration", "evaluation")]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(package_paths() + [str(HERE)])
    return env


def setup(log=print) -> Path:
    """Create or refresh the environment; returns its Python. Idempotent."""
    if is_ready():
        log(f"peers environment up to date: {VENV}")
        return venv_python()
    if not venv_python().is_file():
        log(f"creating {VENV}")
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    py = str(venv_python())
    # One resolver run over both lists: anomalib, torch and ffrt's pins must agree.
    cmd = [py, "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS), *ffrt_requirements()]
    log("installing: " + " ".join(cmd[3:]))
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise SystemExit(f"pip install into {VENV} failed (exit {r.returncode}); fix the pins in {REQUIREMENTS} "
                         "or delete the folder and run --setup again.")
    for old in VENV.glob(".peers-installed-*"):
        old.unlink()
    _stamp_file().touch()
    log(f"peers environment ready: {py}")
    return venv_python()


if __name__ == "__main__":
    setup()
    sys.exit(0)

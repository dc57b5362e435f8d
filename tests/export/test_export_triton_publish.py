"""``ffexport --triton`` killed between two of its renames (issue 23, row 4), and the next
export finishing what the killed one started (the surviving mutation: the next export
removing a killed export's stage, tested by a real second export).

Real tiny FastFlow, real exports. The kill is a real SIGKILL the export process sends
itself at its k-th rename that touches the usable part of OUT (not its hidden stage).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ffexport.cli import main as ffexport_main
from ffrt.metafile import read_onnx_meta

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "runtime", "trainer", "export", "calibration", "evaluation")

_KILL_AT_RENAME = """
import os, signal, sys
out, k, argv = os.path.abspath(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real, seen = os.replace, [0]

def usable(p):
    p = os.path.abspath(os.fspath(p))
    return p.startswith(out + os.sep) and not p[len(out) + 1:].startswith(".ffexport.")

def replace(src, dst, *a, **kw):
    if usable(src) or usable(dst):
        seen[0] += 1
        if seen[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)

os.replace = replace
from ffexport.cli import main
sys.exit(main(argv))
"""


def _batch_max(path: Path) -> int:
    return read_onnx_meta(path).batch_max


def _usable_state(out: Path) -> dict[str, int]:
    """batch_max of each model file a server or a line would load from OUT."""
    return {
        "model.onnx": _batch_max(out / "model.onnx"),
        "triton ffrt_model": _batch_max(out / "triton" / "ffrt_model" / "1" / "model.onnx"),
        "triton ffrt_detector": _batch_max(out / "triton" / "ffrt_detector" / "1" / "ffrt_meta.onnx"),
    }


@pytest.mark.parametrize("k", [2, 4], ids=["at-2nd-rename", "at-4th-rename"])
def test_a_killed_triton_export_is_finished_by_the_next_export(tiny_checkpoint, tmp_path, k):
    out = tmp_path / "line3"
    ckpt = str(tiny_checkpoint)
    # The folder a line has: model and Triton repository of one export (batch_max 8).
    assert ffexport_main(["--no-bf16", "--ckpt", ckpt, "--out", str(out), "--batch-max", "8", "--triton", "--triton-kind", "cpu"]) == 0
    assert set(_usable_state(out).values()) == {8}

    # A new export (batch_max 4) killed in the middle of publishing its files.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in PACKAGES)}
    args = ["--no-bf16", "--ckpt", ckpt, "--out", str(out), "--batch-max", "4", "--triton", "--triton-kind", "cpu"]
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, str(out), str(k), *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    # The next export into the folder, without --triton: it must first finish the killed
    # one's publication, so the repository is the killed export's (batch_max 4) and agrees
    # with model.onnx, and no stage, moved-aside folder or temp file is left anywhere.
    assert ffexport_main(["--no-bf16", "--ckpt", ckpt, "--out", str(out), "--batch-max", "4"]) == 0
    assert _usable_state(out) == {"model.onnx": 4, "triton ffrt_model": 4, "triton ffrt_detector": 4}
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (out / "triton").iterdir()) == ["ffrt_detector", "ffrt_model"]

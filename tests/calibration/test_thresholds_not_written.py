"""``ffcalib thresholds`` when the model file cannot be rewritten (issue 23, row 5).

A real write failure, not a mock: the child process runs under a file-size limit
(RLIMIT_FSIZE) smaller than the model, so the kernel refuses the temp file's bytes with
EFBIG after every image was scored, as a full disk refuses them with ENOSPC. (Permissions
cannot stand in: the tests run as root, which chmod does not stop.)
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys

import pytest

from ffrt import Detector
from support.tail_reference import box_cox_normal_quantile


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE with SIGXFSZ ignored is Linux behaviour")
def test_a_failed_write_prints_the_thresholds_and_one_clear_error(model_copy, elpv_split, tmp_path):
    folder = tmp_path / "normals"
    folder.mkdir()
    normals = [s.path for s in elpv_split.test if s.label == 0][:8]
    for p in normals:
        shutil.copy(p, folder / p.name)
    before = hashlib.sha256(model_copy.read_bytes()).hexdigest()
    limit = model_copy.stat().st_size // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "ffcalib.cli", "thresholds", "--model", str(model_copy), "--normal", str(folder),
         "--target-frr", "0.2", "--no-progress", "--backend", "onnxruntime-cpu", "--threads", "1"],
        capture_output=True, text=True, env=env, timeout=300, preexec_fn=small_files,
    )
    assert out.returncode == 1, out.stderr
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in out.stderr, out.stderr
    assert err[0].startswith(f"ffcalib: error: {model_copy}: cannot write (File too large); the model file is unchanged")

    # The thresholds the scoring found are printed (stdout) and named in the error: the
    # image threshold of an FRR target 0.2 on 8 normals (the tail model's: too few for an
    # order statistic), recomputed here from the scores.
    with Detector(model_copy, backend="onnxruntime-cpu", threads=1) as det:
        scores = sorted(det(folder / p.name).score for p in normals)
    printed = float(re.search(r"image ([0-9.e+-]+) \(", out.stdout).group(1))
    assert printed == pytest.approx(box_cox_normal_quantile(scores, 0.2), rel=2e-3)
    assert f"--image-threshold {printed:.6g}" in err[0]
    assert "(not written)" in out.stdout

    # Nothing half-written, no temp file left, and the file is the one from before.
    assert hashlib.sha256(model_copy.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in model_copy.parent.iterdir() if p.name.endswith(".tmp")) == []


_KILL_AT_RENAME = """
import os, signal, sys
model = os.path.abspath(sys.argv[1])
real = os.replace

def replace(src, dst, *a, **kw):
    if os.path.abspath(os.fspath(dst)) == model:  # the temp file is complete, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)

os.replace = replace
from ffcalib.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_killed_run_leaves_a_temp_file_the_next_run_removes(model_copy, elpv_split, tmp_path):
    # Issue 23 row 9: kill -9 at the rename left a 4 MB .model.onnx.XXXX.tmp forever.
    from ffcalib.cli import main
    from ffrt.metafile import read_onnx_meta

    folder = tmp_path / "normals"
    folder.mkdir()
    for p in [s.path for s in elpv_split.test if s.label == 0][:8]:
        shutil.copy(p, folder / p.name)
    args = ["thresholds", "--model", str(model_copy), "--normal", str(folder), "--target-frr", "0.2", "--no-progress",
            "--backend", "onnxruntime-cpu", "--threads", "1"]
    before = model_copy.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_RENAME, str(model_copy), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    left = [p for p in model_copy.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].name.startswith(".model.onnx.") and left[0].stat().st_size > len(before) // 2
    assert model_copy.read_bytes() == before

    assert main(args) == 0  # the next run, in full
    assert read_onnx_meta(model_copy).thresholds.source.startswith("ffcalib")
    assert [p.name for p in model_copy.parent.iterdir() if p.name.endswith(".tmp")] == []

"""Progress output: a bar on a terminal, one line per stage in a file or pipe (issue 10, item 12)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ffcore.progress import progress

ROOT = Path(__file__).resolve().parents[2]


def test_off_a_terminal_a_stage_is_one_line():
    buf = io.StringIO()
    assert list(progress(range(5), desc="scoring", unit="batch", stream=buf)) == [0, 1, 2, 3, 4]
    text = buf.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert re.fullmatch(r"scoring: 5 batch in \d+\.\d s\n", text)


def test_manual_counters_and_quiet_forms():
    buf = io.StringIO()
    bar = progress(desc="benchmark", unit="round", stream=buf)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(ms="1.5")
    bar.close()
    bar.close()  # once only
    assert re.fullmatch(r"benchmark: 3 round in \d+\.\d s \(ms=1\.5\)\n", buf.getvalue())
    quiet = io.StringIO()
    assert list(progress(range(3), desc="epoch 1/2", stream=quiet, summary=False)) == [0, 1, 2]
    assert list(progress(range(3), desc="x", stream=quiet, enabled=False)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_a_long_stage_off_a_terminal_prints_a_line_every_so_often():
    # ffrt run on a line goes for hours: its log gets a line now and then, not only at the end.
    buf = io.StringIO()
    bar = progress(desc="run", unit="frames", stream=buf, every_s=0.0)  # 0: a line at every update
    bar.set_postfix(rejected="10.0%")
    bar.update(2)
    bar.update(0)  # nothing new, yet the line is due
    bar.close()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert all(re.fullmatch(r"run: 2 frames so far, [\d.]+ frames/s, rejected=10\.0%", line) for line in lines[:2])
    assert re.fullmatch(r"run: 2 frames in \d+\.\d s \(rejected=10\.0%\)", lines[2])
    hourly = io.StringIO()
    bar = progress(desc="run", unit="frames", stream=hourly, every_s=3600.0)
    bar.update(5)
    bar.close()
    assert hourly.getvalue().count("\n") == 1  # only the closing line


def test_on_a_terminal_a_bar_is_drawn():
    master, slave = os.openpty()  # a real pseudo-terminal
    try:
        with os.fdopen(slave, "w", closefd=True) as tty:
            assert list(progress(range(3), desc="scoring", unit="batch", stream=tty)) == [0, 1, 2]
            tty.flush()
            drawn = os.read(master, 65536).decode()
    finally:
        os.close(master)
    assert "scoring" in drawn and "\r" in drawn  # tqdm redraws in place


def test_no_module_uses_tqdm_directly():
    offenders = []
    for pkg in ("core", "runtime", "trainer", "export", "calibration", "evaluation", "demo"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.M):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_fftrain_into_a_pipe_prints_lines_not_bar_redraws(tmp_path, elpv_split):
    # Issue 10: `make demo > log` produced thousands of lines, one per tqdm refresh.
    good = tmp_path / "part" / "train" / "good"
    good.mkdir(parents=True)
    for i, s in enumerate(elpv_split.train[:6]):
        shutil.copy(s.path, good / f"{i:03d}.png")
    proc = subprocess.run(
        [sys.executable, "-m", "fftrain.cli", "--data", str(tmp_path / "part"), "--out", str(tmp_path / "m.pt"),
         "--epochs", "2", "--image-size", "64", "--flow-steps", "2", "--hidden-ratio", "0.5", "--batch-size", "2"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert len(re.findall(r"^epoch +\d+ ", proc.stdout, re.M)) == 2  # one line per epoch
    for stage in ("features (train)", "features (val)", "features (val, synthetic)"):
        assert len(re.findall(rf"^{re.escape(stage)}: \d+ batch in ", proc.stderr, re.M)) == 1, proc.stderr
    assert len(proc.stderr.splitlines()) <= 5, proc.stderr

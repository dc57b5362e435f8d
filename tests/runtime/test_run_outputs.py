"""What ``ffrt run`` writes when names, counts and disks misbehave (issue 23, rows 3 and 11).

Real files through the real CLI: a file named with Latin-1 bytes (what a Windows share or
an old camera PC leaves on a Linux disk) must be named as the OS gave it; the last progress
line and summary.json must agree with what was written, also when the disk fills up.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import cv2
import pytest

from conftest import solid_bgr
from ffrt.cli import main

NAME = b"caf\xe9_cell.png"  # 0xE9 alone is not UTF-8


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores names as raw bytes")
def test_a_non_utf8_file_name_is_written_as_the_os_gives_it(red_model, tmp_path):
    folder = tmp_path / "cells"
    folder.mkdir()
    red = cv2.imencode(".png", solid_bgr(40, 50, (0, 0, 255)))[1].tobytes()
    with open(os.path.join(os.fsencode(folder), NAME), "wb") as f:
        f.write(red)
    (folder / "plain.png").write_bytes(red)
    out = tmp_path / "out"
    # A red image scores 1.0 with this model: threshold 0.5 rejects both, so the overlay
    # and mask pictures (named after the file) are written too.
    code = main(["run", str(red_model), str(folder), "--out", str(out), "--csv", "--overlays", "--masks",
                 "--threads", "1", "--image-threshold", "0.5"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete", summary

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    by_name = {os.path.basename(os.fsencode(r["file"])): r for r in records}
    assert set(by_name) == {NAME, b"plain.png"}
    assert [by_name[n]["status"] for n in (NAME, b"plain.png")] == ["scored", "scored"]
    assert by_name[NAME]["verdict"] == "FAIL"
    assert os.path.exists(os.path.join(os.fsencode(out), os.fsencode(by_name[NAME]["overlay"])))

    # results.csv: the raw bytes of the name, in an otherwise UTF-8 file.
    raw = (out / "results.csv").read_bytes()
    assert os.path.join(os.fsencode(folder), NAME) in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8", "surrogateescape"))))
    assert sorted(os.path.basename(os.fsencode(r["file"])) for r in rows) == sorted([NAME, b"plain.png"])
    assert all(r["verdict"] == "FAIL" and r["status"] == "scored" for r in rows)


def test_the_last_progress_line_agrees_with_the_summary(red_model, tmp_path, capsys):
    # Issue 23 row 11: the progress counts are refreshed at most twice a second, and the run's
    # last line said errors=6 where the summary said 11. One good file, then 11 corrupt ones,
    # all handled within a fraction of a second.
    folder = tmp_path / "cells"
    folder.mkdir()
    (folder / "a_good.png").write_bytes(cv2.imencode(".png", solid_bgr(40, 50, (0, 0, 255)))[1].tobytes())
    for i in range(11):
        (folder / f"b_corrupt_{i:02d}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["run", str(red_model), str(folder), "--out", str(tmp_path / "out"), "--threads", "1"])
    assert code == 1
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.startswith("run: ")][-1]
    assert last.startswith("run: 12 frames") and last.endswith("errors=11)"), last
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["totals"]["errors"] == 11


def test_a_full_results_file_leaves_a_summary_that_agrees_and_says_why(red_model, tmp_path):
    # Issue 23 row 11: a full disk left summary.json counting more frames than results.jsonl
    # held, with no reason. A real failed write: the run goes under a file-size limit that
    # results.jsonl reaches after some dozens of lines (summary.json stays below it).
    import resource
    import subprocess
    import sys

    folder = tmp_path / "cells"
    folder.mkdir()
    first = folder / "f_0000.png"
    first.write_bytes(cv2.imencode(".png", solid_bgr(40, 50, (0, 0, 255)))[1].tobytes())
    for i in range(1, 300):
        os.link(first, folder / f"f_{i:04d}.png")
    out = tmp_path / "out"
    limit = 24_000

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "ffrt", "run", str(red_model), str(folder), "--out", str(out),
                           "--threads", "1"], capture_output=True, text=True, timeout=300, preexec_fn=small_files,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode != 0, proc.stderr[-2000:]
    lines = (out / "results.jsonl").read_bytes()
    assert lines.endswith(b"\n")  # whole lines only
    n = lines.count(b"\n")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert 0 < n < 300 and summary["totals"]["frames"] == n, (n, summary["totals"])
    assert "results.jsonl" in summary["error"] and f"up to line {n} are complete" in summary["error"], summary["error"]

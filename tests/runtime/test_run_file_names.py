"""``ffrt run`` over a folder whose file names are not UTF-8 (issue 23, row 3).

A real file named with Latin-1 bytes (what a Windows share or an old camera PC leaves on a
Linux disk), through the real CLI with every output on: the run must finish and name the
file as the OS gave it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import pytest

from conftest import solid_bgr
from ffrt.cli import main

import cv2

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

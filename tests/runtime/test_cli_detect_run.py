"""``ffrt detect`` runs a line can trust (issue 10, items 3, 4 and 6).

Real subprocesses for SIGINT and FIFOs, real files written here, the red-channel model.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import pytest

from conftest import solid_bgr
from ffrt.cli import main

ROOT = Path(__file__).resolve().parents[2]
RED_BGR, BLUE_BGR = (0, 0, 255), (255, 0, 0)


def _png(path: Path, bgr=RED_BGR, h=40, w=50) -> Path:
    path.write_bytes(cv2.imencode(".png", solid_bgr(h, w, bgr))[1].tobytes())
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width x height, with one row of data (a bomb's header)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    idat = zlib.compress(b"\x00" * (width + 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _ffrt(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffrt", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def test_ctrl_c_writes_the_report_of_what_was_processed_and_exits_130(red_model, tmp_path):
    # Issue 10: Ctrl-C (exit 130) wrote no --json report although 110 images were processed.
    images = tmp_path / "images"
    images.mkdir()
    data = cv2.imencode(".png", solid_bgr(16, 16, RED_BGR))[1].tobytes()
    total = 5000  # far more result lines than the pipe and both sides' buffers hold: the run cannot finish unread
    for i in range(total):
        (images / f"part_{i:05d}.png").write_bytes(data)
    report = tmp_path / "out" / "report.json"
    proc = subprocess.Popen(
        _ffrt("detect", str(red_model), str(images), "--json", str(report), "--threads", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
        # A test runner started in the background (nohup, `cmd &` in a script) inherits SIGINT
        # as *ignored*, and Python then installs no KeyboardInterrupt handler: give the child
        # the disposition a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = [proc.stdout.readline() for _ in range(3)]
        assert all(line.rstrip().endswith("FAIL") for line in seen), seen
        # The report exists from the start, while the run goes.
        assert json.loads(report.read_text())["status"] == "running"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    done = [r["path"] for r in data["images"]]
    assert 3 <= len(done) < total
    assert all(r["is_anomalous"] is True and r["score"] == pytest.approx(1.0) for r in data["images"])
    printed = [line.split()[0] for line in seen + rest.splitlines() if "  score " in line]
    assert set(printed) <= set(done)  # every image reported on screen is in the report
    assert f"{len(done)} images: {len(done)} FAIL" in rest  # the summary still printed
    assert "interrupted after" in err and str(report) in err and "Traceback" not in err


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_an_unwritable_report_fails_before_the_first_image(red_model, tmp_path, capsys, where):
    # Issue 10: an unwritable --json path failed only after every image was processed.
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png")
    _png(images / "b.png", BLUE_BGR)
    if where == "a folder":
        target = tmp_path / "existing_folder"
        target.mkdir()
    else:
        (tmp_path / "plain_file").write_text("x")
        target = tmp_path / "plain_file" / "report.json"
    code = main(["detect", str(red_model), str(images), "--json", str(target)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "PASS" not in out and "FAIL" not in out  # no image was processed
    assert err.startswith("ffrt: error: --json") and err.count("\n") == 1


def test_an_unwritable_overlay_folder_fails_before_the_first_image(red_model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "a.png")
    (tmp_path / "plain_file").write_text("x")
    code = main(["detect", str(red_model), str(images), "--overlays", str(tmp_path / "plain_file" / "ov")])
    out, err = capsys.readouterr()
    assert code == 1 and "FAIL" not in out and "--overlays" in err


def test_skipped_entries_are_listed(red_model, tmp_path, capsys):
    # Issue 10: non-image files, sub-folders and a folder named x.png were skipped without a word.
    d = tmp_path / "images"
    d.mkdir()
    _png(d / "a.png")
    (d / "notes.txt").write_text("not an image")
    (d / "sub").mkdir()
    _png(d / "sub" / "c.png", BLUE_BGR)
    (d / "x.png").mkdir()
    _png(d / "x.png" / "inner.png", BLUE_BGR)
    os.mkfifo(d / "pipe.png")
    (d / "dangling.png").symlink_to(d / "nowhere.png")
    report = tmp_path / "r.json"
    code = main(["detect", str(red_model), str(d), "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0  # skipped entries are not errors
    assert out.splitlines()[0].startswith(str(d / "a.png")) and "1 image: 1 FAIL, 0 PASS" in out
    expected = {
        "notes.txt": "not an image file name",
        "sub": "sub-folder",
        "x.png": "sub-folder",
        "pipe.png": "not a regular file",
        "dangling.png": "broken link",
    }
    for name, why in expected.items():
        assert any(line.startswith(f"ffrt: skipped {d / name}:") and why in line for line in err.splitlines()), (name, err)
    assert "skipped 5 folder entries" in out
    data = json.loads(report.read_text())
    assert data["status"] == "complete" and [r["path"] for r in data["images"]] == [str(d / "a.png")]
    assert {Path(s["path"]).name: s["reason"] for s in data["skipped"]}.keys() == expected.keys()
    # --recursive checks the sub-folders' images, including those of the folder named x.png.
    assert main(["detect", str(red_model), str(d), "--recursive", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert [Path(r["path"]).relative_to(d).as_posix() for r in data["images"]] == ["a.png", "sub/c.png", "x.png/inner.png"]


def test_detect_goes_on_past_a_bomb_and_a_strip(red_model, tmp_path, capsys):
    # Issue 10: a PNG declaring 50000x50000 aborted `ffrt detect` midway: no summary, no
    # JSON, later images unprocessed.
    d = tmp_path / "images"
    d.mkdir()
    _png(d / "a.png")
    _png_header_only(d / "b_bomb.png", 50_000, 50_000)
    _png(d / "c.png", BLUE_BGR)
    _png(d / "d_strip.png", h=1, w=5000)
    _png(d / "e.png")
    report = tmp_path / "r.json"
    code = main(["detect", str(red_model), str(d), "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 1
    assert [line.split()[0] for line in out.splitlines()[:3]] == [str(d / n) for n in ("a.png", "c.png", "e.png")]
    assert "3 images: 2 FAIL, 1 PASS, 2 unreadable" in out and "latency:" in out
    assert "b_bomb.png" in err and "50000x50000" in err and "max_pixels" in err
    assert "d_strip.png" in err and "min_side" in err
    data = json.loads(report.read_text())
    assert data["status"] == "complete"
    assert [("error" in r) for r in data["images"]] == [False, True, False, True, False]
    # The limits are command-line options too.
    assert main(["detect", str(red_model), str(d / "d_strip.png"), "--min-side", "1"]) == 0
    capsys.readouterr()


def test_a_fifo_named_on_the_command_line_is_an_error_not_a_hang(red_model, tmp_path):
    fifo = tmp_path / "frame.png"
    os.mkfifo(fifo)
    try:
        proc = subprocess.run(_ffrt("detect", str(red_model), str(fifo)), capture_output=True, text=True,
                              env=_env(), cwd=ROOT, timeout=60)
    except subprocess.TimeoutExpired:  # run() has killed the blocked process
        pytest.fail("ffrt detect blocked on a FIFO")
    assert proc.returncode == 1
    assert "FIFO" in proc.stderr and "regular file" in proc.stderr and "Traceback" not in proc.stderr

"""``ffrt detect --json``: the report while the run goes, after SIGTERM, and after a crash
(issue 23, row 6 and the surviving mutations about the report).

Real subprocesses, real signals, the red-channel model (a red image scores 1.0: FAIL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2

from conftest import solid_bgr

ROOT = Path(__file__).resolve().parents[2]
RED_BGR = (0, 0, 255)


def _images(folder: Path, n: int) -> Path:
    """n red images big enough (1200x1200) that the run outlasts several report rewrites;
    hard links to one file, so they cost no disk."""
    folder.mkdir()
    first = folder / "part_00000.png"
    first.write_bytes(cv2.imencode(".png", solid_bgr(1200, 1200, RED_BGR))[1].tobytes())
    for i in range(1, n):
        os.link(first, folder / f"part_{i:05d}.png")
    return folder


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ffrt", "detect", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, cwd=ROOT,
    )


def _drain(stream, into: list[str]) -> threading.Thread:
    """Read a pipe to its end in a thread, so the child never blocks on a full pipe (the
    only reader of that pipe: communicate() would take lines from it too)."""
    t = threading.Thread(target=lambda: into.extend(stream), daemon=True)
    t.start()
    return t


def _watch_report(report: Path, proc, until, timeout: float = 120.0) -> list[tuple[int, str, int]]:
    """(inode, status, images) of each distinct state of the report seen while the run goes,
    until ``until(states)``. Every read must parse: a rewrite is never seen half done."""
    states: list[tuple[int, str, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            fd = os.open(report, os.O_RDONLY)
        except FileNotFoundError:
            time.sleep(0.005)
            continue
        with os.fdopen(fd, "rb") as f:
            inode, data = os.fstat(f.fileno()).st_ino, json.loads(f.read())
        state = (inode, data["status"], len(data["images"]))
        if not states or states[-1] != state:
            states.append(state)
        if until(states):
            return states
        time.sleep(0.005)
    raise AssertionError(f"the run ended or timed out before the report showed it; seen {states}")


def _wait(proc, readers, errs) -> str:
    """Wait for the run to end and its output to be read; returns what it printed on stderr."""
    proc.wait(timeout=120)
    for r in readers:
        r.join(timeout=10)
    return "".join(errs)


def test_sigterm_finalises_the_report_like_ctrl_c(red_model, tmp_path):
    # Issue 23: SIGTERM (systemd, docker stop) left the report at "running" with a stale count.
    images = _images(tmp_path / "images", 3000)
    report = tmp_path / "report.json"
    proc = _spawn(str(red_model), str(images), "--json", str(report), "--threads", "1")
    out, errs = [], []
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, errs)]
    try:
        # The report is rewritten while the run goes, each time as a new file renamed over the
        # old one (a new inode; an in-place rewrite keeps the inode and can be read half done).
        states = _watch_report(report, proc, lambda s: sum(st == "running" and n > 0 for _, st, n in s) >= 2)
        running = [(ino, n) for ino, st, n in states if st == "running"]
        assert len({ino for ino, _ in running}) == len(running), states
        assert [n for _, n in running] == sorted(n for _, n in running) and running[-1][1] > 0, states
        proc.send_signal(signal.SIGTERM)
        err = _wait(proc, readers, errs)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    done = [r["path"] for r in data["images"]]
    printed = [line.split()[0] for line in out if "  score " in line]
    assert 0 < len(done) < 3000
    assert printed == done[: len(printed)] and len(done) - len(printed) <= 1  # at most the one being printed
    assert f"{len(done)} images: {len(done)} FAIL, 0 PASS" in "".join(out)
    assert f"stopped by SIGTERM after {len(done)} of 3000 images" in err and "Traceback" not in err


def test_an_error_mid_run_leaves_the_report_failed(red_model, tmp_path):
    # A real error in the middle of the run that is not an image's own problem: the overlay
    # folder is replaced by a file, so the next overlay cannot be written. The report must
    # say "failed" with the images done before, not stay at "running".
    images = _images(tmp_path / "images", 3000)
    report, overlays = tmp_path / "report.json", tmp_path / "overlays"
    proc = _spawn(str(red_model), str(images), "--json", str(report), "--overlays", str(overlays), "--threads", "1")
    out, errs = [], []
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, errs)]
    try:
        _watch_report(report, proc, lambda s: s[-1][1] == "running" and s[-1][2] > 0)
        overlays.rename(tmp_path / "overlays.moved")
        overlays.write_bytes(b"a file where the folder was")
        err = _wait(proc, readers, errs)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    data = json.loads(report.read_text())
    assert data["status"] == "failed", err
    done = len(data["images"])
    assert 0 < done < 3000
    assert done == len(list((tmp_path / "overlays.moved").iterdir()))  # every record's overlay was written
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err

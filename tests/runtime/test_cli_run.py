"""``ffrt run``: many sources into one Detector, one JSON line per frame (issue 14).

Real ONNX Runtime on the tiny FastFlow trained on real ELPV cells (tests/conftest.py), real
ELPV images, real videos written with OpenCV, a real MJPEG camera stream over HTTP on
loopback, real signals to a real subprocess. Camera indices (/dev/video*) do not exist here:
they go through the same OpenCV VideoCapture reader as the stream, which is tested.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffrt import Detector
from ffrt.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from line_media import MjpegCamera, damage_frame, write_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cells(elpv_split) -> list[Path]:
    """Paths of 40 real ELPV cell images (300x300 PNG)."""
    return [s.path for s in elpv_split.train[:40]]


def _frames(paths) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in paths]


def _lines(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text()
    assert text == "" or text.endswith("\n")  # never half a line
    return [json.loads(line) for line in text.splitlines()]


def _by_source(lines: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for rec in lines:
        out.setdefault(rec["source"], []).append(rec)
    return out


def _ffrt(*args: str) -> list[str]:
    return [sys.executable, "-m", "ffrt", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        _ffrt(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
        # A test runner started in the background inherits SIGINT ignored, and Python then
        # installs no handler: give the child the disposition a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_lines(proc, out: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "results.jsonl"
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"ffrt run ended early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"fewer than {n} result lines after {timeout} s")


def test_folder_and_video_with_a_corrupt_frame(tiny_onnx, cells, tmp_path, capsys):
    folder = tmp_path / "cells"
    folder.mkdir()
    for p in cells[:6]:
        shutil.copy(p, folder / p.name)
    data = (folder / cells[0].name).read_bytes()
    (folder / "zz_truncated.png").write_bytes(data[: len(data) // 2])  # an unreadable file among good ones
    video = write_video(tmp_path / "line.avi", _frames(cells[10:20]))
    cap = cv2.VideoCapture(str(video))
    intact = [cap.read()[1] for _ in range(10)]  # the frames as OpenCV decodes them, before the damage
    cap.release()
    damage_frame(video, 4)

    # What each frame must score: the same model called directly, one frame at a time.
    with Detector(tiny_onnx, threads=1) as det:
        file_scores = {p.name: det(folder / p.name).score for p in cells[:6]}
        video_scores = [det(f).score for f in intact]
    threshold = float(np.median(list(file_scores.values()) + video_scores))  # some PASS, some FAIL

    out = tmp_path / "out"
    code = main([
        "run", str(tiny_onnx), str(folder), str(video), "--out", str(out), "--source-name", "cells",
        "--source-name", "cam2", "--csv", "--overlays", "--masks", "--threads", "1", "--image-threshold", str(threshold),
    ])
    stdout, stderr = capsys.readouterr()
    assert code == 1  # two frames could not be read
    by = _by_source(_lines(out))

    files = by["cells"]
    assert [r["frame"] for r in files] == list(range(7))
    assert [Path(r["file"]).name for r in files] == sorted(p.name for p in cells[:6]) + ["zz_truncated.png"]
    bad = files[-1]
    assert bad["status"] == "error" and "zz_truncated.png" in bad["error"] and "verdict" not in bad
    for r in files[:-1]:
        assert r["status"] == "scored"
        assert r["score"] == pytest.approx(file_scores[Path(r["file"]).name], rel=1e-5)
        assert r["verdict"] == ("FAIL" if r["score"] > threshold else "PASS")
        assert 0.0 <= r["normalized_score"] <= 1.0 and r["latency_ms"] > 0
        split = [r[k] for k in ("queue_ms", "preprocess_ms", "inference_ms", "postprocess_ms")]
        assert min(split) >= 0 and sum(split) == pytest.approx(r["latency_ms"], abs=0.01)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"])

    frames = by["cam2"]
    assert [r["frame"] for r in frames] == list(range(10))
    assert frames[4]["status"] == "error" and "could not be decoded" in frames[4]["error"]
    for r in frames[:4] + frames[5:]:
        # Frame k of the damaged file is frame k of the intact one: the damage cost one frame.
        assert r["status"] == "scored" and r["score"] == pytest.approx(video_scores[r["frame"]], rel=1e-5)
        assert r["video_ms"] == pytest.approx(100.0 * r["frame"], abs=1.0)  # 10 fps
    # Pictures exist for exactly the rejected frames.
    for r in files + frames:
        rejected = r.get("verdict") == "FAIL"
        assert ("overlay" in r) == rejected and ("mask" in r) == rejected
        if rejected:
            assert cv2.imread(str(out / r["overlay"])).shape == (300, 300, 3)
            mask = cv2.imread(str(out / r["mask"]), cv2.IMREAD_GRAYSCALE)
            assert mask.shape == (300, 300) and set(np.unique(mask)) <= {0, 255}
            # The regions are the mask's connected components, in the frame's coordinates.
            assert sum(g["area_px"] for g in r["regions"]) == int((mask == 255).sum())
            for g in r["regions"]:
                x, y, w, h = g["bbox"]
                assert 0 <= x and 0 <= y and x + w <= 300 and y + h <= 300 and mask[y:y + h, x:x + w].any()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    s = {src["name"]: src for src in summary["sources"]}
    assert (s["cells"]["frames"], s["cells"]["scored"], s["cells"]["errors"]) == (7, 6, 1)
    assert (s["cam2"]["frames"], s["cam2"]["scored"], s["cam2"]["errors"]) == (10, 9, 1)
    assert s["cam2"]["codec"] == "MJPG" and "codec" not in s["cells"]
    fails = sum(r.get("verdict") == "FAIL" for r in files + frames)
    assert summary["totals"]["fail"] == fails and summary["totals"]["errors"] == 2
    # The Detector's own count per source agrees with the file.
    assert s["cells"]["pipeline"]["completed"] == 6 and s["cam2"]["pipeline"]["completed"] == 9
    assert summary["health"]["state"] in ("ok", "drift", "insufficient_data")
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 17 and sum(r["status"] == "error" for r in rows) == 2
    assert f"total: 17 frames" in stdout and f"{fails} FAIL" in stdout
    assert "zz_truncated.png" in stderr and "cam2 frame 4" in stderr


def test_a_source_that_ends_or_disconnects_does_not_stop_the_others(tiny_onnx, cells, tmp_path, capsys):
    folder = tmp_path / "two"
    folder.mkdir()
    for p in cells[:2]:
        shutil.copy(p, folder / p.name)
    video = write_video(tmp_path / "long.avi", _frames(cells[:30]))
    broken = tmp_path / "broken.avi"
    broken.write_text("not a video")
    out = tmp_path / "out"
    with MjpegCamera(_frames(cells[30:38]), fps=20) as camera:
        names = [a for n in ("two", "ipcam", "long", "broken") for a in ("--source-name", n)]
        code = main(["run", str(tiny_onnx), str(folder), camera.url, str(video), str(broken), "--out", str(out), "--threads", "1", *names])
    stdout, stderr = capsys.readouterr()
    assert code == 1  # the camera went away and one file was never a video
    lines = _lines(out)
    by = _by_source(lines)
    assert [r["frame"] for r in by["two"]] == [0, 1]
    assert [r["frame"] for r in by["long"]] == list(range(30))
    assert [r["frame"] for r in by["ipcam"]] == list(range(8))  # every frame the camera sent
    assert all(r["status"] == "scored" for r in lines)
    assert lines[-1]["source"] != "two"  # the others went on after it ended
    s = {src["name"]: src for src in json.loads((out / "summary.json").read_text())["sources"]}
    assert s["two"]["ended"] == "end of the image list" and not s["two"]["source_failed"]
    assert s["long"]["ended"] == "end of the video file" and s["long"]["scored"] == 30
    assert s["ipcam"]["ended"].startswith("disconnected") and s["ipcam"]["source_failed"]
    assert s["broken"]["frames"] == 0 and s["broken"]["source_failed"] and "could not be opened" in s["broken"]["ended"]
    assert "broken: could not be opened" in stderr and "disconnected" in stderr
    assert "total: 40 frames" in stdout


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_writes_every_submitted_frame_and_the_summary(tiny_onnx, cells, tmp_path, sig, code):
    video = write_video(tmp_path / "slow.avi", _frames(cells[:40]), fps=10)
    out = tmp_path / "out"
    # --realtime: 10 frames a second, as a camera delivers them; the run takes 4 s unless stopped.
    proc = _spawn("run", str(tiny_onnx), str(video), "--out", str(out), "--realtime", "--threads", "1", "--csv")
    try:
        _wait_for_lines(proc, out, 3)
        proc.send_signal(sig)  # SIGTERM: what systemd sends a line service it stops
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, stderr
    lines = _lines(out)
    n = len(lines)
    assert 3 <= n < 40
    assert [r["frame"] for r in lines] == list(range(n))  # nothing submitted was lost
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["totals"]["frames"] == summary["totals"]["scored"] == n
    assert summary["sources"][0]["ended"] == "stopped"
    assert len((out / "results.csv").read_text().splitlines()) == n + 1
    assert f"total: {n} frames" in stdout
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_a_killed_run_leaves_only_whole_lines(tiny_onnx, cells, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(2000):  # links: the run cannot end before the kill
        os.link(cells[i % len(cells)], folder / f"{i:04d}.png")
    out = tmp_path / "out"
    proc = _spawn("run", str(tiny_onnx), str(folder), "--out", str(out), "--threads", "1")
    try:
        _wait_for_lines(proc, out, 20)
        proc.kill()  # SIGKILL: no handler, no flush, mid-run
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = _lines(out)  # every line parses and the file ends with a newline
    assert len(lines) >= 20 and [r["frame"] for r in lines] == list(range(len(lines)))
    assert json.loads((out / "summary.json").read_text())["status"] == "running"  # the last rewrite, whole


def test_a_short_write_is_taken_back(tmp_path):
    # RLIMIT_FSIZE makes the kernel accept only part of a write past the limit (what a full
    # disk does): the part must not stay in the file. In a child: the limit is per process.
    script = f"""
import resource, signal, sys
from pathlib import Path
from ffrt.line.writer import LineFile
from ffrt.errors import FFRTError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
f = LineFile(Path({str(tmp_path / 'r.jsonl')!r}))
try:
    for i in range(10):
        f.write_line('{{"line": %d, "pad": "%s"}}' % (i, 'x' * 10))
except FFRTError as e:
    print("refused:", e)
f.close()
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Lines of 33 bytes: three fit in 100, the kernel takes 1 byte of the fourth.
    assert "refused:" in proc.stdout and "took only 1 of 33 bytes of line 4" in proc.stdout
    text = (tmp_path / "r.jsonl").read_text()
    assert len(text) == 99 and [json.loads(line)["line"] for line in text.splitlines()] == [0, 1, 2]


def test_refusals_come_before_the_model_loads(tmp_path, capsys, monkeypatch):
    missing_model = str(tmp_path / "no_model.onnx")  # never opened if the refusal comes first
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").write_text("")
    assert main(["run", missing_model, str(img), "--out", str(out)]) == 1
    assert "already holds results.jsonl" in capsys.readouterr().err
    assert main(["run", missing_model, str(img), str(tmp_path / "nope"), str(tmp_path / "*.bmp"), "--out", str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "nope: no such file or folder" in err and "matches no image files" in err and err.count("\n") == 1
    assert main(["run", missing_model, str(img), "--source-name", "a", "--source-name", "b", "--out", str(tmp_path / "o3")]) == 1
    assert "one name per source" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # not installed: import fails
    assert main(["run", missing_model, str(img), "--out", str(tmp_path / "o4"), "--metrics-port", "0"]) == 1
    err = capsys.readouterr().err
    assert "optional extra 'metrics'" in err and 'pip install "ffrt[metrics]"' in err
    assert not (tmp_path / "o4").exists()


def test_metrics_endpoint_on_loopback(tiny_onnx, cells, tmp_path):
    pytest.importorskip("prometheus_client", reason="needs the optional extra 'metrics' (pip install \"ffrt[metrics]\")")
    import urllib.request

    video = write_video(tmp_path / "slow.avi", _frames(cells[:40]), fps=10)
    out = tmp_path / "out"
    proc = _spawn("run", str(tiny_onnx), str(video), "--out", str(out), "--realtime", "--threads", "1",
                  "--source-name", "cam1", "--metrics-port", "0")
    try:
        url = None
        for _ in range(50):
            line = proc.stderr.readline()
            m = re.search(r"metrics: (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url is not None and url.startswith("http://127.0.0.1:")  # loopback by default
        _wait_for_lines(proc, out, 5)
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130

    samples = [
        (m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), float(m.group(3)))
        for m in re.finditer(r"^(\w+)(?:{(.*)})? (\S+)$", body, re.M)
    ]

    def value(metric: str, **labels) -> float:
        found = [v for n, lab, v in samples if n == metric and lab == labels]
        assert found, f"{metric} {labels} not in:\n{body}"
        return found[0]

    scored = sum(v for n, lab, v in samples if n == "ffrt_frames_total" and lab.get("outcome") in ("pass", "fail"))
    assert scored >= 5
    # A scrape reads the histograms, then the counters: a frame counted in between is in the
    # counters only (never the other way round).
    for stage in ("queue", "preprocess", "inference", "postprocess", "total"):
        assert scored - 1 <= value("ffrt_stage_latency_seconds_count", source="cam1", stage=stage) <= scored
    total = value("ffrt_stage_latency_seconds_count", source="cam1", stage="total")
    assert value("ffrt_stage_latency_seconds_bucket", source="cam1", stage="total", le="+Inf") == total
    assert 0 < value("ffrt_throughput_fps", source="cam1") < 20  # paced at 10 frames/s
    assert 0.0 <= value("ffrt_reject_rate", source="cam1") <= 1.0
    assert value("ffrt_source_up", source="cam1") == 1.0
    assert value("ffrt_queue_depth") >= 0
    drift = [lab["state"] for n, lab, v in samples if n == "ffrt_drift" and v == 1.0]
    assert len(drift) == 1 and drift[0] in ("ok", "drift", "insufficient_data")
    assert scored <= value("ffrt_drift_value", stat="count") <= 40  # the drift window holds every score so far


def test_what_each_argument_is_and_its_default_name(tmp_path, monkeypatch):
    from ffrt.line.sources import parse_sources

    monkeypatch.chdir(tmp_path)
    for d in ("top", "side"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "a.png"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "side" / "notes.txt").write_text("x")
    (tmp_path / "line.avi").write_bytes(b"")
    specs = parse_sources(["top", "side/*", "line.avi", "0", "rtsp://user@10.0.0.7:554/s1", "top/a.png", "top"], None)
    assert [(s.kind, s.name) for s in specs] == [
        ("images", "top"), ("images", "side"), ("video", "line"), ("camera", "camera0"),
        ("stream", "10.0.0.7_554"), ("images", "a"), ("images", "top-2"),
    ]
    assert specs[1].files == (Path("side/a.png"),) and specs[1].skipped[0][0] == "side/notes.txt"
    assert [s.live for s in specs] == [False, False, False, True, True, False, False]


def test_queue_policy_reject_refuses_frames_and_accounts_for_each(tiny_onnx, cells, tmp_path, capsys):
    folder = tmp_path / "fast"
    folder.mkdir()
    for i in range(30):
        os.link(cells[i % len(cells)], folder / f"{i:03d}.png")
    video = write_video(tmp_path / "v.avi", _frames(cells[:30]))
    out = tmp_path / "out"
    # Two sources reading far faster than one thread scores, into a queue of one frame.
    code = main(["run", str(tiny_onnx), str(folder), str(video), "--out", str(out), "--threads", "1",
                 "--queue-policy", "reject", "--queue-size", "1", "--max-batch", "1"])
    assert code == 0  # refused frames are the policy working, not errors
    by = _by_source(_lines(out))
    summary = json.loads((out / "summary.json").read_text())
    for name in ("fast", "v"):
        recs = by[name]
        assert [r["frame"] for r in recs] == list(range(30))  # every frame once, in order
        assert {r["status"] for r in recs} <= {"scored", "refused"}
        src = next(s for s in summary["sources"] if s["name"] == name)
        assert src["refused"] == sum(r["status"] == "refused" for r in recs) == src["pipeline"]["rejected"]
        assert src["scored"] == sum(r["status"] == "scored" for r in recs)
    assert summary["totals"]["refused"] > 0 and summary["totals"]["scored"] > 0
    assert "refused" in capsys.readouterr().out


def test_queue_policy_drop_oldest_keeps_the_newest_frame(tiny_onnx, cells, tmp_path):
    video = write_video(tmp_path / "live.avi", _frames(cells[:40]))
    out = tmp_path / "out"
    code = main(["run", str(tiny_onnx), str(video), "--out", str(out), "--threads", "1",
                 "--queue-policy", "drop_oldest", "--queue-size", "1", "--max-batch", "1"])
    assert code == 0
    recs = _lines(out)
    assert [r["frame"] for r in recs] == list(range(40))
    dropped = [r for r in recs if r["status"] == "dropped"]
    assert dropped and all("verdict" not in r for r in dropped)
    assert recs[-1]["status"] == "scored"  # the newest frame is never the one dropped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["dropped"] == len(dropped) == summary["sources"][0]["pipeline"]["dropped"]


def test_a_metrics_port_in_use_fails_before_any_frame(tiny_onnx, cells, tmp_path, capsys):
    pytest.importorskip("prometheus_client", reason="needs the optional extra 'metrics' (pip install \"ffrt[metrics]\")")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = tmp_path / "out"
        assert main(["run", str(tiny_onnx), str(cells[0]), "--out", str(out), "--metrics-port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"--metrics-port {port} on 127.0.0.1: cannot listen" in err and err.count("\n") == 1
    assert not (out / "results.jsonl").exists()


def test_a_lossy_source_is_warned_about_unless_the_model_learnt_codec_artefacts(tiny_onnx, cells, tmp_path, capsys):
    """MJPEG artefacts score as defects on a model trained on lossless images (docs/quickstart.md, fftrain
    --augment-jpeg): ffrt run says so once for each source whose codec is lossy."""
    from ffrt.meta import AugmentationInfo
    from ffrt.metafile import read_onnx_meta, write_onnx_meta

    frames = _frames(cells[:3])
    mjpg = write_video(tmp_path / "mjpg.avi", frames)
    ffv1 = write_video(tmp_path / "ffv1.avi", frames, fourcc="FFV1")
    assert read_onnx_meta(tiny_onnx).augmentation == AugmentationInfo(views=4, jpeg_share=0.0)

    def run(model: Path, out: Path) -> tuple[str, dict]:
        code = main(["run", str(model), str(mjpg), str(ffv1), "--out", str(out), "--source-name", "lossy",
                     "--source-name", "lossless", "--threads", "1"])
        assert code == 0
        summary = json.loads((out / "summary.json").read_text())
        return capsys.readouterr().err, {src["name"]: src for src in summary["sources"]}

    err, sources = run(tiny_onnx, tmp_path / "out1")
    assert (sources["lossy"]["codec"], sources["lossless"]["codec"]) == ("MJPG", "FFV1")
    warnings = [line for line in err.splitlines() if "-compressed (lossy)" in line]
    assert len(warnings) == 1 and "lossy: its frames are MJPG-compressed" in warnings[0], err
    assert "--augment-jpeg" in warnings[0]

    taught = tmp_path / "taught.onnx"
    shutil.copy(tiny_onnx, taught)
    meta = read_onnx_meta(taught)
    write_onnx_meta(taught, meta.model_copy(update={"augmentation": AugmentationInfo(views=4, jpeg_share=0.5)}))
    err, sources = run(taught, tmp_path / "out2")
    assert sources["lossy"]["codec"] == "MJPG" and "-compressed (lossy)" not in err

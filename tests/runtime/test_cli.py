"""The ffrt command: output lines, exit codes, JSON report, overlays."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffrt.cli import main

from conftest import solid_bgr

ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, bgr) -> Path:
    path.write_bytes(cv2.imencode(".png", solid_bgr(40, 50, bgr))[1].tobytes())
    return path


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    _png(d / "a_red.png", (0, 0, 255))
    _png(d / "b_blue.png", (255, 0, 0))
    (d / "notes.txt").write_text("not an image")
    return d


def test_info(red_model, capsys):
    assert main(["info", str(red_model)]) == 0
    out = capsys.readouterr().out
    assert "[N, 32, 32, 3]" in out and "image 0.5, pixel 0.5" in out and "RANDOM weights" in out
    assert main(["info", "--json", str(red_model)]) == 0
    assert json.loads(capsys.readouterr().out)["input"]["height"] == 32


def test_info_on_a_non_ffrt_model(models, capsys):
    assert main(["info", str(models["no_meta"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ffrt: error: ") and "not an ffrt model" in err and err.count("\n") == 1


def test_detect_folder_json_and_overlays(red_model, image_dir, tmp_path, capsys):
    report, overlays = tmp_path / "out" / "r.json", tmp_path / "ov"
    code = main(["detect", str(red_model), str(image_dir), "--json", str(report), "--overlays", str(overlays)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert "a_red.png" in lines[0] and lines[0].rstrip().endswith("FAIL")
    assert "b_blue.png" in lines[1] and lines[1].rstrip().endswith("PASS")
    assert "2 images: 1 FAIL, 1 PASS" in out and "images/s" in out and "onnxruntime-cpu" in out
    data = json.loads(report.read_text())
    assert [i["is_anomalous"] for i in data["images"]] == [True, False]
    assert data["images"][0]["score"] == pytest.approx(1.0) and data["stats"]["count"] == 2
    pngs = sorted(p.name for p in overlays.iterdir())
    assert pngs == ["a_red.png", "b_blue.png"]
    img = cv2.imdecode(np.fromfile(overlays / "a_red.png", np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (40, 50, 3)


def test_detect_color_order_and_threshold_override(red_model, image_dir, capsys):
    assert main(["detect", str(red_model), str(image_dir / "a_red.png"), "--color-order", "rgb"]) == 0
    assert capsys.readouterr().out.splitlines()[0].rstrip().endswith("PASS")  # red read as blue
    assert main(["detect", str(red_model), str(image_dir / "a_red.png"), "--image-threshold", "1.5"]) == 0
    assert capsys.readouterr().out.splitlines()[0].rstrip().endswith("PASS")


def test_detect_bad_image_is_reported_and_others_still_run(red_model, image_dir, capsys):
    (image_dir / "c_corrupt.png").write_bytes(b"broken")
    code = main(["detect", str(red_model), str(image_dir), str(image_dir / "missing.png")])
    captured = capsys.readouterr()
    assert code == 1
    assert "a_red.png" in captured.out and "b_blue.png" in captured.out
    assert "c_corrupt.png: cannot be decoded" in captured.err and "missing.png: no such file" in captured.err
    assert "2 of 4 images could not be processed" in captured.err


def test_detect_errors_exit_1_with_one_line(red_model, tmp_path, capsys):
    assert main(["detect", str(tmp_path / "missing.onnx"), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ffrt: error:") and "no such model file" in err
    assert main(["detect", str(red_model), str(tmp_path)]) == 1  # empty folder
    assert "no image files" in capsys.readouterr().err


def test_bad_flags(red_model, image_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(red_model), str(image_dir), "--color-order", "BRG"])
    assert exc.value.code == 2  # argparse usage error
    assert main(["detect", str(red_model), str(image_dir), "--backend", "warp-drive"]) == 1
    assert "unknown backend 'warp-drive'" in capsys.readouterr().err
    from ffrt.backends import availability

    if availability()["tensorrt"] is not None:  # a CPU host; on a GPU host tensorrt runs (issue 11 item 9)
        assert main(["detect", str(red_model), str(image_dir), "--backend", "tensorrt"]) == 1
        assert "not available here" in capsys.readouterr().err


def test_backends_command(capsys):
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime-cpu" in out and "available" in out and "tensorrt" in out


def test_module_entry_point_and_help(red_model):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("core", "runtime"))}
    run = lambda *a: subprocess.run([sys.executable, "-m", "ffrt.cli", *a], capture_output=True, text=True, env=env, timeout=120)
    help_text = run("detect", "--help")
    assert help_text.returncode == 0
    for flag in ("--backend", "--json", "--overlays", "--color-order", "--threads", "--image-threshold", "--pixel-threshold", "--recursive"):
        assert flag in help_text.stdout
    info = run("info", str(red_model))
    assert info.returncode == 0 and "thresholds" in info.stdout
    bad = run("info", str(red_model.with_name("missing.onnx")))
    assert bad.returncode == 1 and bad.stderr.startswith("ffrt: error:")


def test_doctor_says_what_this_machine_has(capsys):
    from ffrt.backends import availability

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for label in ("ffrt ", "CUDA host API", "NVIDIA driver", "CUDA libraries (pip)", "TensorRT (Python)", "onnxruntime",
                  "backends (in the order backend='auto' tries them):"):
        assert label in out
    for name, reason in availability().items():
        assert f"  {name}" in out and (reason is None or "unavailable:" in out)
    assert len(out.splitlines()) <= 25  # one screen

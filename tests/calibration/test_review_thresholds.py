"""``ffcalib thresholds`` and the review page: a threshold given by value (--image-threshold,
--pixel-threshold, --thresholds-json) is stored as it is without scoring, and decides like
one; ``--html`` on normals only writes the page, read back in a real headless Chromium."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ffcalib.cli import main
from ffrt import Detector
from ffrt.metafile import read_onnx_meta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from chromium import Browser, chromium_or_skip  # noqa: E402


@pytest.fixture(scope="module")
def normals(elpv_split, tmp_path_factory) -> Path:
    """Twelve held-out ELPV normal cells (never trained on), as a folder."""
    folder = tmp_path_factory.mktemp("normals")
    for s in [s for s in elpv_split.test if s.label == 0][:12]:
        shutil.copy(s.path, folder / s.path.name)
    return folder


def test_image_threshold_is_stored_as_given_and_decides(model_copy, normals, capsys):
    image = sorted(normals.iterdir())[0]
    # One backend for every call: the threshold is set to this exact score, and "auto" may pick
    # another backend (FP32 ~1e-5 apart) on another CPU.
    score = Detector(model_copy, backend="onnxruntime-cpu").predict_batch([str(image)])[0].score
    pixel_before = read_onnx_meta(model_copy).thresholds.pixel
    calibrated_on = read_onnx_meta(model_copy).thresholds.calibrated_on

    assert main(["thresholds", "--model", str(model_copy), "--image-threshold", repr(score)]) == 0
    assert "no images scored" in capsys.readouterr().out
    t = read_onnx_meta(model_copy).thresholds
    assert (t.image, t.pixel, t.calibrated_on) == (score, pixel_before, calibrated_on)
    assert t.source.startswith("set by hand")
    assert not Detector(model_copy, backend="onnxruntime-cpu").predict_batch([str(image)])[0].is_anomalous  # score > threshold rejects; equal passes

    below = float(np.nextafter(score, -np.inf))
    assert main(["thresholds", "--model", str(model_copy), "--image-threshold", repr(below),
                 "--pixel-threshold", "0.25"]) == 0
    t = read_onnx_meta(model_copy).thresholds
    assert (t.image, t.pixel) == (below, 0.25)
    assert Detector(model_copy, backend="onnxruntime-cpu").predict_batch([str(image)])[0].is_anomalous


def test_thresholds_json_is_applied(model_copy, tmp_path):
    doc = tmp_path / "thresholds.json"
    doc.write_text(json.dumps({"schema": "ffrt.thresholds", "schema_version": 1, "image": 2.5, "pixel": 0.75,
                               "source": "review page"}))
    assert main(["thresholds", "--model", str(model_copy), "--thresholds-json", str(doc)]) == 0
    t = read_onnx_meta(model_copy).thresholds
    assert (t.image, t.pixel) == (2.5, 0.75) and "review page" in t.source


@pytest.mark.parametrize("args, message", [
    (["--image-threshold", "-1"], "finite number >= 0"),
    (["--image-threshold", "nan"], "finite number >= 0"),
    (["--pixel-threshold", "inf"], "finite number >= 0"),
    (["--image-threshold", "1", "--normal", "."], "give either the values or the images"),
    (["--image-threshold", "1", "--thresholds-json", "x.json"], "not both"),
    (["--thresholds-json", "{folder}/missing.json"], "cannot read it"),
    (["--thresholds-json", "{folder}/wrong.json"], "not a thresholds file"),
    (["--thresholds-json", "{folder}/broken.json"], "not JSON"),
    (["--thresholds-json", "{folder}/negative.json"], "finite number >= 0"),
])
def test_threshold_by_value_refusals_leave_the_file_alone(model_copy, tmp_path, capsys, args, message):
    (tmp_path / "wrong.json").write_text(json.dumps({"image": 1.0}))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "negative.json").write_text(json.dumps({"schema": "ffrt.thresholds", "image": -2}))
    before = model_copy.read_bytes()
    argv = ["thresholds", "--model", str(model_copy), *[a.format(folder=tmp_path) for a in args]]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert model_copy.read_bytes() == before
    assert main(["thresholds", "--model", str(model_copy), "--image-threshold", "1.5"]) == 0  # the next call works
    assert read_onnx_meta(model_copy).thresholds.image == 1.5


def test_html_refused_before_scoring(model_copy, normals, tmp_path, capsys):
    before = model_copy.read_bytes()
    assert main(["thresholds", "--model", str(model_copy), "--normal", str(normals), "--html",
                 str(tmp_path / "page.txt"), "--no-progress"]) == 1
    assert "name ending in .html" in capsys.readouterr().err
    assert model_copy.read_bytes() == before


def test_html_on_normals_only(model_copy, normals, tmp_path, capsys):
    page = tmp_path / "pages" / "review.html"
    assert main(["thresholds", "--model", str(model_copy), "--normal", str(normals), "--target-frr", "0.1",
                 "--html", str(page), "--no-progress"]) == 0
    assert f"review page: {page}" in capsys.readouterr().out
    stored = read_onnx_meta(model_copy).thresholds.image

    # Scores straight from ONNX Runtime (not through ffrt or ffcalib).
    from ffcore.data import Sample, load_batch

    files = sorted(normals.iterdir())
    sess = ort.InferenceSession(str(model_copy), providers=["CPUExecutionProvider"])
    scores = np.concatenate([sess.run(["score"], {"image": load_batch([Sample(p, 0) for p in files[i:i + 8]], 64)})[0]
                             for i in range(0, len(files), 8)]).astype(np.float64)
    browser = Browser(chromium_or_skip())
    try:
        browser.open(page.as_uri())
        shown = browser.evaluate("""(() => { const v = (id) => document.getElementById(id).dataset.value;
            return {t: v("thr-value"), fr: v("c-false_reject"), ta: v("c-true_accept"), frr: v("frr"),
                    recall: v("recall"), pictures: document.querySelectorAll("#flips img").length,
                    cards: document.querySelectorAll("#flips .card").length,
                    warn: document.querySelector(".warn").textContent}; })()""")
        assert float(shown["t"]) == stored
        assert (int(shown["fr"]), int(shown["ta"])) == (int((scores > stored).sum()), int((scores <= stored).sum()))
        assert float(shown["frr"]) == pytest.approx(float((scores > stored).mean()), abs=1e-12)
        assert shown["recall"] == ""  # no defects: recall is not shown as a number
        assert "Normal images only" in shown["warn"]
        lowest = float(scores.min()) * 0.999
        browser.evaluate(f"""(() => {{ const n = document.getElementById("thr-number"); n.value = "{lowest!r}";
                         n.dispatchEvent(new Event("input")); }})()""")
        flipped = int(((scores > lowest) & (scores <= stored)).sum())
        assert browser.evaluate("document.getElementById('flip-count').dataset.value") == str(flipped)
        assert browser.evaluate("document.querySelectorAll('#flips .card img').length") == 2 * flipped
        assert browser.console_errors() == []
    finally:
        browser.close()


def test_dry_run_checks_values_and_writes_nothing(model_copy, capsys):
    before = model_copy.read_bytes()
    assert main(["thresholds", "--model", str(model_copy), "--image-threshold", "2.5", "--dry-run"]) == 0
    assert "image 2.5 (was" in capsys.readouterr().out
    assert main(["thresholds", "--model", str(model_copy), "--image-threshold", "-2", "--dry-run"]) == 1
    assert "finite number >= 0" in capsys.readouterr().err
    assert model_copy.read_bytes() == before


def test_html_dry_run_says_nothing_was_written(model_copy, normals, tmp_path):
    before = model_copy.read_bytes()
    page = tmp_path / "dry.html"
    assert main(["thresholds", "--model", str(model_copy), "--normal", str(normals), "--html", str(page), "--dry-run",
                 "--no-progress"]) == 0
    assert model_copy.read_bytes() == before
    assert "Dry run: the thresholds marked as stored" in page.read_text()

"""The threshold review page of ``ffeval --html``, in a real headless Chromium: the numbers
the page shows after the slider moves equal ffeval's metrics.json (at the stored threshold)
and a numpy computation on scores taken straight from ONNX Runtime (at two other
positions); it makes no network request; its thresholds.json is what ffcalib applies.

The defects here are SYNTHETIC (ffcore.synthetic on real ELPV normal cells)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ffeval.eval_cli import main as ffeval_main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from chromium import Browser, chromium_or_skip  # noqa: E402

Z95 = 1.959963984540054


@pytest.fixture(scope="module")
def page(tiny_onnx, synthetic_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("review")
    html = out / "review.html"
    # ONNX Runtime, as the independent scores below: "auto" may pick OpenVINO, whose FP32 scores
    # differ from ONNX Runtime's by ~1e-6 relative (tests/runtime/test_openvino.py holds that parity).
    rc = ffeval_main([str(tiny_onnx), "--data", str(synthetic_folder), "--out", str(out), "--html", str(html),
                      "--examples", "1", "--quiet", "--backend", "onnxruntime-cpu"])
    assert rc == 0
    return html, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def browser():
    b = Browser(chromium_or_skip())
    yield b
    b.close()


def _independent_scores(tiny_onnx, folder):
    """{file name: (label, defect type, score)} straight from an ONNX Runtime session on the
    trainer's loading path (not through ffrt, ffeval or the page)."""
    from fftrain.data import load_batch, resolve

    samples = resolve(str(folder)).test
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    scores = np.concatenate([sess.run(["score"], {"image": load_batch(samples[i:i + 8], 64)})[0]
                             for i in range(0, len(samples), 8)]).astype(np.float64)
    return {str(s.path): (s.label, s.defect_type, float(v)) for s, v in zip(samples, scores)}


def _wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _shown(b: Browser) -> dict:
    """What the page shows, read from its elements (data-value holds the full-precision number)."""
    return b.evaluate("""(() => {
        const v = (id) => { const e = document.getElementById(id); return e ? e.dataset.value : null; };
        const out = {};
        for (const id of ["thr-value", "c-true_reject", "c-false_reject", "c-false_accept", "c-true_accept", "frr",
                          "frr-lo", "frr-hi", "recall", "precision", "f1", "flip-count"]) out[id] = v(id);
        out.types = {};
        document.querySelectorAll("#per-type tr[data-type]").forEach((tr) => {
            out.types[tr.dataset.type] = v("recall-" + tr.dataset.type); });
        out.number = document.getElementById("thr-number").value;
        out.command = document.getElementById("apply-command").textContent;
        out.cards = document.querySelectorAll("#flips .card").length;
        return out; })()""")


def _move_slider(b: Browser, value: float) -> float:
    """Moves the slider as a person would (input event); returns the threshold the page took."""
    b.evaluate(f"""(() => {{ const s = document.getElementById("thr-slider"); s.value = "{value!r}";
                 s.dispatchEvent(new Event("input", {{bubbles: true}})); }})()""")
    return float(_shown(b)["thr-value"])


def _gap_middles(truth: dict, stored: float) -> list[float]:
    """The middles of the widest gaps between scores below and above ``stored``: a threshold
    there has every part clearly on one side, and parts between it and ``stored`` flip."""
    s = np.sort([v[2] for v in truth.values()])
    gaps = [(s[i + 1] - s[i], (s[i] + s[i + 1]) / 2) for i in range(len(s) - 1)]
    below = max((g for g in gaps if g[1] < stored), default=None)
    above = max((g for g in gaps if g[1] > stored), default=None)
    positions = [p[1] for p in (below, above) if p is not None]
    assert len(positions) == 2, f"scores do not straddle the stored threshold {stored}: {s}"
    return positions


def _expected(truth: dict, t: float, stored: float) -> dict:
    labels = np.array([v[0] for v in truth.values()])
    scores = np.array([v[2] for v in truth.values()])
    types = np.array([v[1] for v in truth.values()])
    rej = scores > t
    tp, fp = int((rej & (labels == 1)).sum()), int((rej & (labels == 0)).sum())
    fn, tn = int((~rej & (labels == 1)).sum()), int((~rej & (labels == 0)).sum())
    lo, hi = min(t, stored), max(t, stored)
    return {
        "c-true_reject": tp, "c-false_reject": fp, "c-false_accept": fn, "c-true_accept": tn,
        "frr": fp / (fp + tn), "frr-ci": _wilson(fp, fp + tn), "recall": tp / (tp + fn),
        "precision": tp / (tp + fp) if tp + fp else 0.0, "f1": 2 * tp / (2 * tp + fp + fn),
        "types": {k: float(rej[(labels == 1) & (types == k)].mean()) for k in set(types[labels == 1])},
        "flips": int(((scores > lo) & (scores <= hi)).sum()),
    }


def _check(shown: dict, want: dict):
    for k in ("c-true_reject", "c-false_reject", "c-false_accept", "c-true_accept"):
        assert int(shown[k]) == want[k], (k, shown, want)
    for k in ("frr", "recall", "precision", "f1"):
        assert float(shown[k]) == pytest.approx(want[k], abs=1e-12), (k, shown[k], want[k])
    assert (float(shown["frr-lo"]), float(shown["frr-hi"])) == pytest.approx(want["frr-ci"], abs=1e-12)
    assert {k: float(v) for k, v in shown["types"].items()} == pytest.approx(want["types"], abs=1e-12)
    assert int(shown["flip-count"]) == want["flips"] == shown["cards"]


def test_counts_at_three_slider_positions_equal_metrics_json_and_numpy(page, browser, tiny_onnx, synthetic_folder,
                                                                        tmp_path):
    html, metrics = page
    truth = _independent_scores(tiny_onnx, synthetic_folder)
    stored = metrics["image"]["threshold"]
    browser.open(html.as_uri())

    import hashlib

    context = browser.evaluate("""Object.fromEntries(Array.from(document.querySelectorAll(".context dt"))
        .map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))""")
    assert context["model sha256"] == hashlib.sha256(tiny_onnx.read_bytes()).hexdigest()
    assert context["backend"] == metrics["model"]["backend"] and context["precision"] == metrics["model"]["precision"]
    assert context["data"].startswith(str(synthetic_folder)) and context["machine"]
    assert browser.evaluate("!!document.getElementById('pro') && !!document.getElementById('roc')")

    # 1: the stored threshold (where the page opens): metrics.json's own figures.
    shown = _shown(browser)
    assert float(shown["thr-value"]) == stored
    im = metrics["image"]
    assert {k: int(shown["c-" + k]) for k in im["confusion_at_threshold"]} == im["confusion_at_threshold"]
    assert float(shown["precision"]) == pytest.approx(im["precision_at_threshold"], abs=1e-12)
    assert float(shown["recall"]) == pytest.approx(im["recall_at_threshold"], abs=1e-12)
    assert float(shown["f1"]) == pytest.approx(im["f1_at_threshold"], abs=1e-12)
    assert {k: float(v) for k, v in shown["types"].items()} == pytest.approx(
        {k: v["recall_at_threshold"] for k, v in metrics["per_defect_type"].items()}, abs=1e-12)
    _check(shown, _expected(truth, stored, stored))

    # 2 and 3: the middles of the widest score gaps below and above the stored threshold,
    # so every part is clearly on one side (the page's slider snaps to its step).
    s = np.sort([v[2] for v in truth.values()])
    for i, target in enumerate(_gap_middles(truth, stored)):
        t = _move_slider(browser, target)
        assert np.min(np.abs(s - t)) > 1e-6, "the snapped slider landed on a score"
        shown = _shown(browser)
        want = _expected(truth, t, stored)
        _check(shown, want)
        assert want["flips"] > 0
        assert float(shown["number"]) == t
        assert f"--image-threshold {shown['thr-value']} " in shown["command"]
        shot = browser.screenshot(tmp_path / f"slider{i}.png")
        import cv2

        img = cv2.imread(str(shot))
        assert img is not None and img.shape[1] == 1280 and img.shape[0] > 900 and img.std() > 10

    # On a part's score exactly (typed into the number box): that part is accepted (score > t
    # rejects). The page's embedded scores are ONNX Runtime's, so numpy counts on them here.
    embedded = browser.evaluate("JSON.parse(document.getElementById('review-data').textContent).parts")
    assert {p["path"]: p["score"] for p in embedded} == pytest.approx({k: v[2] for k, v in truth.items()}, abs=1e-6)
    on_part = max(p["score"] for p in embedded if p["label"] == 0)
    browser.evaluate(f"""(() => {{ const n = document.getElementById("thr-number"); n.value = "{on_part!r}";
                     n.dispatchEvent(new Event("input", {{bubbles: true}})); }})()""")
    shown = _shown(browser)
    assert float(shown["thr-value"]) == on_part
    _check(shown, _expected({p["path"]: (p["label"], p["type"], p["score"]) for p in embedded}, on_part, stored))


def test_pixel_threshold_examples_match_the_maps(page, browser, tiny_onnx, synthetic_folder):
    """The share of each example's pixels above the pixel slider equals the share of its
    anomaly map above it, the map taken straight from ONNX Runtime (to within the page's
    256 map levels)."""
    from fftrain.data import load_batch, resolve

    html, _ = page
    browser.open(html.as_uri())
    lo, hi = browser.evaluate("JSON.parse(document.getElementById('review-data').textContent).pixel_range")
    samples = {"/".join(s.path.parts[-2:]): s for s in resolve(str(synthetic_folder)).test}
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    for t in (lo + 0.3 * (hi - lo), lo + 0.6 * (hi - lo)):
        browser.evaluate(f"""(() => {{ const n = document.getElementById("pixel-number"); n.value = "{t!r}";
                         n.dispatchEvent(new Event("input")); }})()""")
        shown = browser.evaluate("""Array.from(document.querySelectorAll("#pixel-examples figcaption"))
            .map((c) => [c.dataset.name, parseFloat(c.dataset.value)])""")
        assert len(shown) == 6
        for name, share in shown:
            amap = sess.run(["anomaly_map"], {"image": load_batch([samples[name]], 64)})[0][0, 0]
            assert share == pytest.approx(float((amap > t).mean()), abs=0.03), name


def test_the_page_makes_no_network_request(page, browser, tmp_path, tiny_onnx, synthetic_folder):
    html, _ = page
    browser.events.clear()
    browser.open(html.as_uri())
    # A position where parts flip whatever the tiny model scores, so there is a picture to click.
    _move_slider(browser, _gap_middles(_independent_scores(tiny_onnx, synthetic_folder),
                                       float(_shown(browser)["thr-value"]))[0])
    browser.evaluate("document.querySelector('#flips img').click()")
    assert browser.evaluate("document.getElementById('zoom').hidden") is False  # the click enlarged it
    assert browser.evaluate("document.getElementById('zoom-image').src").startswith("data:image/jpeg;base64,")
    browser.evaluate("document.getElementById('pixel-slider').dispatchEvent(new Event('input'))")
    time.sleep(0.5)
    urls = browser.requested_urls()
    assert urls and urls[0] == html.as_uri()
    assert [u for u in urls if u != html.as_uri() and not u.startswith(("data:", "blob:"))] == []
    assert browser.console_errors() == []  # a fetch the page's policy refused would show here


def test_the_network_check_sees_a_request(page, browser, tmp_path):
    """The method of the test above can fail: one outside reference in the page is seen, as a
    refused load (the page's Content-Security-Policy) and, without that policy, as a request."""
    html, _ = page
    text = html.read_text()
    probe = '<img src="http://127.0.0.1:9/probe.png" alt="">'
    with_policy = tmp_path / "probe.html"
    with_policy.write_text(text.replace("<body>", "<body>" + probe, 1))
    browser.events.clear()
    browser.open(with_policy.as_uri())
    time.sleep(0.5)
    assert any("127.0.0.1:9/probe.png" in e for e in browser.console_errors())
    without_policy = tmp_path / "probe-no-csp.html"
    start = text.index('<meta http-equiv="Content-Security-Policy"')
    without_policy.write_text((text[:start] + text[text.index(">", start) + 1:]).replace("<body>", "<body>" + probe, 1))
    browser.events.clear()
    browser.open(without_policy.as_uri())
    time.sleep(0.5)
    assert "http://127.0.0.1:9/probe.png" in browser.requested_urls()


def test_downloaded_thresholds_json_is_applied_by_ffcalib(page, browser, tiny_onnx, tmp_path):
    from ffcalib.cli import main as ffcalib_main
    from ffrt.metafile import read_onnx_meta

    html, metrics = page
    browser.open(html.as_uri())
    t = _move_slider(browser, metrics["image"]["threshold"] * 1.25)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
    browser.evaluate("document.getElementById('download-json').click()")
    target = downloads / "thresholds.json"
    deadline = time.monotonic() + 20
    while not target.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    doc = json.loads(target.read_text())
    assert doc["image"] == t
    model = tmp_path / "model.onnx"
    shutil.copy(tiny_onnx, model)
    pixel_before = read_onnx_meta(model).thresholds.pixel
    assert ffcalib_main(["thresholds", "--model", str(model), "--thresholds-json", str(target)]) == 0
    after = read_onnx_meta(model).thresholds
    assert after.image == t
    assert after.pixel == doc["pixel"] == pixel_before

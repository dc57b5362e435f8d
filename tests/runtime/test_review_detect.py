"""``ffrt detect --html``: the review page of a detect run (unlabelled images), read back in a
real headless Chromium against the run's --json report; a bad page name is refused before
any image is scored."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ffrt.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from chromium import Browser, chromium_or_skip  # noqa: E402


def test_detect_html_page_counts_rejects_like_the_report(tiny_onnx, elpv_split, tmp_path, capsys):
    folder = tmp_path / "line"
    folder.mkdir()
    for s in elpv_split.test[:10]:
        shutil.copy(s.path, folder / s.path.name)
    report, page = tmp_path / "run.json", tmp_path / "review.html"
    assert main(["detect", str(tiny_onnx), str(folder), "--json", str(report), "--html", str(page)]) == 0
    assert f"review page: {page}" in capsys.readouterr().out
    records = json.loads(report.read_text())["images"]
    scores = np.array([r["score"] for r in records])
    stored = json.loads(report.read_text())["thresholds"]["image"]

    browser = Browser(chromium_or_skip())
    try:
        browser.open(page.as_uri())
        v = "(id) => document.getElementById(id).dataset.value"
        assert float(browser.evaluate(f"({v})('thr-value')")) == stored
        assert int(browser.evaluate(f"({v})('c-rejected_unlabelled')")) == sum(r["is_anomalous"] for r in records)
        assert browser.evaluate(f"({v})('frr')") == ""  # unlabelled: no rate is claimed
        t = float(np.median(scores)) + 1e-9
        browser.evaluate(f"""(() => {{ const n = document.getElementById("thr-number"); n.value = "{t!r}";
                         n.dispatchEvent(new Event("input")); }})()""")
        assert int(browser.evaluate(f"({v})('c-rejected_unlabelled')")) == int((scores > t).sum())
        lo, hi = min(t, stored), max(t, stored)
        assert int(browser.evaluate(f"({v})('flip-count')")) == int(((scores > lo) & (scores <= hi)).sum())
        assert browser.console_errors() == []
    finally:
        browser.close()


def test_detect_html_bad_name_refused_before_scoring(tiny_onnx, elpv_split, tmp_path, capsys):
    image = elpv_split.test[0].path
    assert main(["detect", str(tiny_onnx), str(image), "--html", str(tmp_path / "review.txt")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "name ending in .html" in err
    assert not (tmp_path / "review.txt").exists()

"""A review page for a large set (2,000 images, the default number of pictures at the demo's
256x256 input) stays under 20 MB and is ready in a real headless Chromium within 2 s."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from ffcore.images import read_rgb, resize_to_model
from ffrt.overlay import render_overlay
from ffrt.review import DEFAULT_PICTURES, ReviewContext, ReviewPart, write_review_page
from ffrt.review.pictures import Picture, Pictures, PixelExample, data_uri

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from chromium import Browser, chromium_or_skip  # noqa: E402

N, SIZE, LIMIT_MB, READY_MS, UPDATE_MS = 2000, 256, 20, 2000, 1000


def test_two_thousand_images_page_is_small_and_fast(elpv_split, tmp_path):
    rng = np.random.default_rng(0)
    cells = [cv2.cvtColor(resize_to_model(read_rgb(s.path), SIZE), cv2.COLOR_RGB2BGR) for s in elpv_split.test[:40]]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pictures, examples = {}, []
    for i in range(DEFAULT_PICTURES):
        cy, cx = rng.integers(30, SIZE - 30, 2)
        amap = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 400.0).astype(np.float32) + rng.random((SIZE, SIZE), np.float32) * 0.1
        frame = cells[i % len(cells)]
        pictures[i] = Picture(data_uri(frame), data_uri(render_overlay(frame, amap, amap > 0.5, 0.0, 1.1)))
        if i < 6:
            examples.append(PixelExample(f"{i}.png", data_uri(frame), data_uri((amap / 1.1 * 255).astype(np.uint8), ".png"), 0.0, 1.1))
    labels = rng.random(N) < 0.3
    # One file name that would end the page's script element if it were pasted in as it is.
    parts = [ReviewPart(f"/line/{'bad' if y else 'good'}/{i:05d}{'</script><!--' if i == 7 else ''}.png", float(rng.normal(2.0 if y else 1.0, 0.3)), int(y),
                        ("crack", "spot", "scratch")[i % 3] if y else "") for i, y in enumerate(labels)]
    page = write_review_page(tmp_path / "big.html", parts, 1.5, 0.5,
                             ReviewContext("/m/model.onnx", "0" * 64, "onnxruntime-cpu", "fp32", "/line"),
                             pictures=Pictures(pictures, examples, (0.0, 1.1)))
    size_mb = page.stat().st_size / 1e6
    assert size_mb < LIMIT_MB, f"{size_mb:.1f} MB"

    browser = Browser(chromium_or_skip())
    try:
        browser.open(page.as_uri())
        ready_ms = int(browser.evaluate("document.body.dataset.readyMs"))
        assert ready_ms < READY_MS, f"ready after {ready_ms} ms"
        assert int(browser.evaluate("document.getElementById('c-true_reject').dataset.value")) + int(
            browser.evaluate("document.getElementById('c-false_accept').dataset.value")) == int(labels.sum())
        # The slider's far end flips most parts: the update (300 cards) still feels immediate.
        update_ms = browser.evaluate("""(() => { const s = document.getElementById("thr-slider"), t0 = performance.now();
            s.value = s.min; s.dispatchEvent(new Event("input")); return performance.now() - t0; })()""")
        assert update_ms < UPDATE_MS, f"slider update took {update_ms:.0f} ms"
        assert browser.evaluate("document.querySelectorAll('#flips .card').length") == 300
        path = browser.evaluate("JSON.parse(document.getElementById('review-data').textContent).parts[7].path")
        assert path == parts[7].path and path.endswith("</script><!--.png")
        assert browser.console_errors() == []
    finally:
        browser.close()
    print(f"2,000-image page: {size_mb:.1f} MB, ready in {ready_ms} ms, slider update {update_ms:.0f} ms")


def test_pictures_go_to_the_parts_nearest_the_stored_threshold():
    from ffrt.review import choose_pictured

    scores = np.array([0.1, 2.9, 1.45, 1.0, 1.62, 5.0, 1.5])
    assert choose_pictured(scores, 1.5, 3) == [6, 2, 4]
    assert sorted(choose_pictured(scores, 1.5, 100)) == list(range(7))
    assert choose_pictured(scores, 1.5, 0) == []

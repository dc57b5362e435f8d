"""One pipeline: every way into the Detector runs the stages of ffrt.stages once per image,
and each frame's geometry is computed once (ffcore.geometry), then used for the map back.

The red-channel model (conftest) scores the red channel, so where a red patch of the frame
ends up in the mask and the regions is known exactly, through the real onnxruntime.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import make_graph, make_meta, save_model, solid_bgr
from ffcore.geometry import FrameGeometry
from support.counting import count_methods

from ffrt import Detector
from ffrt.stages import Stages

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def letterbox_model(tmp_path_factory) -> Path:
    meta = make_meta()
    meta = meta.model_copy(update={"input": meta.input.model_copy(update={"resize_mode": "letterbox"})})
    return save_model(tmp_path_factory.mktemp("lb") / "red_letterbox.onnx", make_graph(), meta)


@pytest.fixture
def calls(monkeypatch) -> Counter:
    """Counts FrameGeometry.of and each stage, calling the real ones."""
    counts: Counter = Counter()
    real_of = FrameGeometry.of.__func__

    def counted_of(cls, *a, **k):
        counts["geometry"] += 1
        return real_of(cls, *a, **k)

    monkeypatch.setattr(FrameGeometry, "of", classmethod(counted_of))
    return count_methods(monkeypatch, Stages, ("prepare", "run", "finish"), counts)


def _frame_with_red_patch() -> np.ndarray:
    """A 40 x 160 blue frame (4:1, letterboxed into 32 x 32) with a red 20 x 40 patch at x 100-139, y 10-29."""
    frame = solid_bgr(40, 160, (255, 0, 0))
    frame[10:30, 100:140] = (0, 0, 255)
    return frame


def test_a_direct_call_runs_each_stage_once_and_computes_the_geometry_once(letterbox_model, calls):
    with Detector(letterbox_model, backend="onnxruntime-cpu") as det:
        calls.clear()  # loading may look at nothing, but count only the call
        result = det(_frame_with_red_patch())
    assert dict(calls) == {"geometry": 1, "prepare": 1, "run": 1, "finish": 1}
    # The geometry that placed the frame also brought the map back: the patch is where it was.
    assert result.anomaly_map.shape == (40, 160)
    (region,) = result.regions
    x, y, w, h = region.bbox
    assert abs(x - 100) <= 5 and abs(y - 10) <= 5 and abs(w - 40) <= 10 and abs(h - 20) <= 10
    assert not result.mask[:, :90].any()


def test_a_batch_computes_each_frame_geometry_once_and_runs_the_backend_once(letterbox_model, calls):
    with Detector(letterbox_model, backend="onnxruntime-cpu") as det:
        calls.clear()
        results = det.predict_batch([_frame_with_red_patch(), solid_bgr(32, 32, (255, 0, 0)), solid_bgr(50, 20, (0, 0, 255))])
    assert dict(calls) == {"geometry": 3, "prepare": 1, "run": 1, "finish": 3}
    assert [r.anomaly_map.shape for r in results] == [(40, 160), (32, 32), (50, 20)]
    assert [r.is_anomalous for r in results] == [True, False, True]


def test_submit_runs_the_same_stages_once_per_image(letterbox_model, calls):
    with Detector(letterbox_model, backend="onnxruntime-cpu", max_batch=1) as det:
        calls.clear()
        direct = det(_frame_with_red_patch())
        calls.clear()
        queued = det.submit(_frame_with_red_patch()).result(timeout=30)
    assert dict(calls) == {"geometry": 1, "prepare": 1, "run": 1, "finish": 1}
    np.testing.assert_array_equal(queued.anomaly_map, direct.anomaly_map)
    assert queued.regions == direct.regions


#: The only places in the shipped code that may resize an image: the frame geometry, the
#: ground-truth mask reader (nearest-neighbour, into the model geometry its caller chose)
#: and the overlay drawing (display only).
_RESIZE_ALLOWED = {("core/ffcore/geometry.py", "to_model"), ("core/ffcore/geometry.py", "to_frame"),
                   ("core/ffcore/images.py", "read_mask"), ("runtime/ffrt/overlay.py", "render_overlay")}
_PACKAGES = ("core", "trainer", "export", "calibration", "runtime", "evaluation")


def _resize_calls() -> set[tuple[str, str]]:
    found = set()
    for package in _PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                            and node.func.attr == "resize" and isinstance(node.func.value, ast.Name)
                            and node.func.value.id == "cv2"):
                        found.add((path.relative_to(ROOT).as_posix(), fn.name))
    return found


def test_frame_geometry_is_defined_once():
    """A second place that resizes frames (or maps back) would be a second definition of the
    frame geometry: use ffcore.geometry.FrameGeometry instead."""
    extra = _resize_calls() - _RESIZE_ALLOWED
    assert not extra, f"cv2.resize outside ffcore.geometry: {sorted(extra)}; use FrameGeometry"
    letterbox_defs = []
    for package in _PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef) and "letterbox" in node.name:
                    letterbox_defs.append((path.relative_to(ROOT).as_posix(), node.name))
    assert letterbox_defs == [], letterbox_defs

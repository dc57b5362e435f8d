"""DetectorConfig: one typed object for a Detector's settings, built one way from every
entry point (Detector keywords, the command lines, the Triton model)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from conftest import solid_bgr

from ffrt import Detector
from ffrt.cli import main
from ffrt.config import BackendRequest, DetectorConfig
from ffrt.errors import BackendUnavailableError, InvalidArgumentError

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime" / "ffrt"


def test_build_maps_the_flat_names_and_keeps_the_defaults():
    cfg = DetectorConfig.build(backend="openvino", precision="BF16", threads=3, device=1, max_pixels=5_000_000,
                               backend_options={"infer_requests": 2}, queue_policy="drop_oldest")
    assert cfg.backend == BackendRequest(name="openvino", device=1, threads=3, precision="bf16",
                                         options={"infer_requests": 2})
    assert cfg.max_pixels == 5_000_000 and cfg.queue_policy == "drop_oldest"
    assert cfg.min_side == 8 and cfg.max_delay_ms == 2.0 and cfg.color_order == "BGR"
    # On top of a base: only what is named changes.
    again = DetectorConfig.build(cfg, threads=1, color_order="rgb")
    assert again.backend.name == "openvino" and again.backend.threads == 1 and again.color_order == "RGB"
    assert again.max_pixels == 5_000_000


@pytest.mark.parametrize("settings, message", [
    ({"precision": "fp8"}, "precision must be one of 'auto', 'fp32', 'bf16'"),
    ({"threads": 0}, "threads must be a positive integer or None"),
    ({"device": -1}, "device must be a GPU index >= 0"),
    ({"backend_options": ["a"]}, "backend_options must be a dict or None"),
    ({"color_order": "BRG"}, "color_order must be 'BGR'"),
    ({"max_pixels": 0}, "max_pixels must be a positive integer or None"),
    ({"min_side": True}, "min_side must be a positive integer"),
    ({"min_region_px": -1}, "min_region_px must be an integer >= 0"),
    ({"drift_window": 0}, "drift_window must be a positive integer"),
    ({"queue_policy": "newest"}, "queue_policy must be one of 'block', 'reject', 'drop_oldest'"),
    ({"max_delay_ms": -1}, r"max_delay_ms must be a number of milliseconds in \[0, 60000\)"),
    ({"max_batch": 0}, "max_batch must be a positive integer"),
    ({"treshold": 0.5}, "Detector has no setting 'treshold'"),
])
def test_each_bad_setting_gets_its_own_message_before_any_model_loads(settings, message, tmp_path):
    with pytest.raises(InvalidArgumentError, match=message):
        DetectorConfig.build(**settings)
    # The same through Detector, on a path that does not exist: the setting is refused first.
    with pytest.raises(InvalidArgumentError, match=message):
        Detector(tmp_path / "missing.onnx", **settings)


def test_a_detector_takes_a_config_and_keywords_on_top(red_model):
    cfg = DetectorConfig.build(backend="onnxruntime-cpu", image_threshold=0.9, min_side=4)
    with Detector(red_model, cfg) as det:
        assert det.config == cfg and det.thresholds.image == 0.9 and det.limits.min_side == 4
        assert det(solid_bgr(32, 32, (0, 0, 255))).is_anomalous  # red scores 1.0 > 0.9
    with Detector(red_model, cfg, image_threshold=1.5) as det:
        assert det.thresholds.image == 1.5 and det.config.min_side == 4
        assert not det(solid_bgr(32, 32, (0, 0, 255))).is_anomalous
    with pytest.raises(InvalidArgumentError, match="config must be a DetectorConfig"):
        Detector(red_model, "onnxruntime-cpu")


def test_ffrt_info_prints_the_config_the_command_line_makes(capsys, red_model):
    assert main(["info", str(red_model), "--config", "--threads", "2", "--precision", "bf16", "--max-pixels",
                 "5000000", "--image-threshold", "0.7", "--backend", "openvino"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["backend"] == {"name": "openvino", "device": 0, "threads": 2, "precision": "bf16", "options": {}}
    assert printed["max_pixels"] == 5_000_000 and printed["image_threshold"] == 0.7 and printed["min_side"] == 8


def test_detect_passes_precision_from_the_command_line_to_the_backend(red_model, tmp_path, capsys):
    image = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(image), solid_bgr(32, 32, (0, 0, 255)))
    # ONNX Runtime runs files as written: asking it for BF16 must be refused, which shows the
    # flag reached the backend choice.
    assert main(["detect", str(red_model), str(image), "--backend", "onnxruntime-cpu", "--precision", "bf16"]) != 0
    assert "cannot run precision='bf16'" in capsys.readouterr().err
    with pytest.raises(BackendUnavailableError):
        Detector(red_model, backend="onnxruntime-cpu", precision="bf16")


def test_command_lines_build_the_detector_only_through_the_one_mapping():
    """No entry point maps argparse values to Detector keywords by hand: every Detector made
    in ffrt's command lines gets ``detector_config(args)``, defined once (basecli.py)."""
    definitions, hand_mapped = [], []
    for path in RUNTIME.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "detector_config":
                definitions.append(path.relative_to(ROOT).as_posix())
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("Detector", "serve"):
                for kw in node.keywords:
                    if isinstance(kw.value, ast.Attribute) and getattr(kw.value.value, "id", None) == "args" \
                            and kw.value.attr in ("backend", "threads", "precision", "max_pixels", "min_side",
                                                  "image_threshold", "pixel_threshold", "max_batch", "device"):
                        hand_mapped.append(f"{path.relative_to(ROOT)}:{node.lineno} {kw.arg}=args.{kw.value.attr}")
    assert definitions == ["runtime/ffrt/basecli.py"]
    assert hand_mapped == []

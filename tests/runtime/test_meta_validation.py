"""Metadata a line can trust: the schema refuses what would make decisions meaningless.

Issue 10, items 2 and 7: a model whose metadata says ``image_threshold: Infinity`` loaded and
passed every part. Each case below writes a real ONNX file (the red-channel graph) whose
metadata JSON was edited the way a hand edit or a broken tool would, then loads it with
the real Detector and ``ffrt info``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_graph, make_meta, save_model
from ffrt import Detector, InvalidArgumentError, ModelFileError
from ffrt.cli import main
from ffrt.tensorrt.plan import read_engine_info, sidecar_path

ROOT = Path(__file__).resolve().parents[2]


def _edit(meta: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = meta
    for key in parents:
        node = node[key]
    node[last] = value
    return meta


def _model_with(tmp_path: Path, dotted: str, raw_value: str) -> Path:
    """The red model with one metadata field replaced by ``raw_value`` (JSON text, so
    ``Infinity``/``NaN`` are written the way Python's json module writes them)."""
    meta = make_meta().model_dump(mode="json")
    _edit(meta, dotted, "@@")
    text = json.dumps(meta).replace('"@@"', raw_value)
    return save_model(tmp_path / "edited.onnx", make_graph(), meta_json=text)


BAD_FIELDS = [
    ("thresholds.image", "Infinity", "finite"),
    ("thresholds.image", "NaN", "finite"),
    ("thresholds.image", "-0.5", "greater than or equal to 0"),
    ("thresholds.pixel", "Infinity", "finite"),
    ("thresholds.pixel", "-1e-3", "greater than or equal to 0"),
    ("thresholds.image", '"0.7"', "valid number"),
    ("schema_version", "-5", "greater than or equal to 1"),
    ("schema_version", "0", "greater than or equal to 1"),
    ("schema_version", '"2"', "valid integer"),
    ("input.std", "[0.229, 0.0, 0.225]", "greater than 0"),
    ("input.std", "[0.229, -0.2, 0.225]", "greater than 0"),
    ("input.mean", "[0.485, NaN, 0.406]", "finite"),
    ("input.height", '"32"', "valid integer"),
    ("score.topk_fraction", "Infinity", "finite"),
    ("flow.clamp", "Infinity", "finite"),
]


@pytest.mark.parametrize("field,raw,fragment", BAD_FIELDS, ids=[f"{f}={r}" for f, r, _ in BAD_FIELDS])
def test_unusable_metadata_is_refused_on_load(tmp_path, field, raw, fragment):
    path = _model_with(tmp_path, field, raw)
    with pytest.raises(ModelFileError) as exc:
        Detector(path)
    text = str(exc.value)
    assert field in text and fragment in text
    # What to do about it: the message names the tools that write good metadata.
    assert "ffcalib thresholds" in text and "ffexport" in text


@pytest.mark.parametrize("bank,fragment", [
    ({"stride": 16, "vectors": 10, "weight": 0.0, "map_weight": 0.0}, "must weigh in the score or the map"),
    ({"stride": 16, "vectors": 10, "weight": 0.5, "map_weight": -0.5}, "greater than or equal to 0"),
    ({"stride": 16, "vectors": 10, "weight": 0.5, "map_weight": "Infinity"}, "finite"),
], ids=["weighs nowhere", "negative map weight", "infinite map weight"])
def test_a_memory_bank_that_cannot_count_is_refused(tmp_path, bank, fragment):
    meta = make_meta().model_dump(mode="json")
    meta["score"]["memory_bank"] = bank
    text = json.dumps(meta).replace('"Infinity"', "Infinity")
    with pytest.raises(ModelFileError, match="memory_bank") as exc:
        Detector(save_model(tmp_path / "m.onnx", make_graph(), meta_json=text))
    assert fragment in str(exc.value)


def test_a_memory_bank_in_the_map_only_loads(tmp_path):
    meta = make_meta().model_dump(mode="json")
    meta["score"]["memory_bank"] = {"stride": 16, "vectors": 10, "weight": 0.0, "map_weight": 0.5}
    det = Detector(save_model(tmp_path / "m.onnx", make_graph(), meta_json=json.dumps(meta)))
    assert det.meta.score.memory_bank.map_weight == 0.5
    # Files of schema 11 have no map weight: their bank is in the score only.
    del meta["score"]["memory_bank"]["map_weight"]
    meta["score"]["memory_bank"]["weight"] = 0.25
    old = Detector(save_model(tmp_path / "old.onnx", make_graph(), meta_json=json.dumps(meta)))
    assert old.meta.score.memory_bank.map_weight == 0.0


def test_score_stats_must_be_finite(tmp_path):
    meta = make_meta().model_dump(mode="json")
    meta["score_stats"] = {"count": 10, "mean": 1.0, "std": "Infinity", "min": 0.5, "max": 2.0, "p50": 1.0, "p99": 1.9}
    text = json.dumps(meta).replace('"Infinity"', "Infinity")
    with pytest.raises(ModelFileError, match="score_stats.std"):
        Detector(save_model(tmp_path / "m.onnx", make_graph(), meta_json=text))


def test_an_infinite_threshold_no_longer_passes_every_part(tmp_path, capsys):
    path = _model_with(tmp_path, "thresholds.image", "Infinity")
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ffrt: error: ") and err.count("\n") == 1
    assert "thresholds.image" in err and "image inf" not in err


def test_setter_and_schema_agree_on_negative_thresholds(red_model):
    det = Detector(red_model)
    for bad in (-0.1, float("-inf")):
        with pytest.raises(InvalidArgumentError):
            det.set_thresholds(image=bad)
        with pytest.raises(InvalidArgumentError):
            Detector(red_model, pixel_threshold=bad)
    assert det.set_thresholds(image=0.0).image == 0.0  # zero is a valid (strict) threshold


def test_well_formed_metadata_still_loads(red_model):
    det = Detector(red_model)
    assert det.thresholds.image == 0.5 and det.meta.input.std == (0.229, 0.224, 0.225)


def test_deeply_nested_metadata_is_a_clear_error(tmp_path):
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    path = save_model(tmp_path / "deep.onnx", make_graph(), meta_json=deep)
    with pytest.raises(ModelFileError, match="ffrt.meta"):
        Detector(path)
    # The CLI in a real process: one line, exit 1, no traceback.
    proc = subprocess.run(
        [sys.executable, "-m", "ffrt", "info", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("ffrt: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr


def test_deeply_nested_engine_sidecar_is_a_clear_error(tmp_path):
    plan = tmp_path / "model.engine"
    plan.write_bytes(b"plan")
    sidecar_path(plan).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelFileError, match="engine metadata"):
        read_engine_info(plan)


def test_ffrt_info_reads_an_engine_sidecar(tmp_path, capsys):
    import hashlib

    from ffrt.tensorrt.plan import BatchProfile, EngineInfo, write_engine

    plan = b"opaque plan bytes"
    info = EngineInfo(
        tensorrt_version="10.9.0", gpu_name="NVIDIA RTX A2000", compute_capability="8.6", onnx_sha256="a" * 64,
        plan_sha256=hashlib.sha256(plan).hexdigest(), precision="fp16", profile=BatchProfile(min=1, opt=4, max=8),
        built_at="2026-01-01T00:00:00+00:00", meta=make_meta(batch_max=8, image=0.7),
    )
    path = write_engine(tmp_path / "model.engine", plan, info)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "image 0.7, pixel 0.5" in out and "[N, 32, 32, 3]" in out
    assert "TensorRT 10.9.0" in out and "NVIDIA RTX A2000" in out and "aaaaaaaaaaaa" in out
    assert main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["meta"]["thresholds"]["image"] == 0.7
    # An engine without its sidecar: the engine message, not "not a readable ONNX file".
    bare = tmp_path / "bare.engine"
    bare.write_bytes(plan)
    assert main(["info", str(bare)]) == 1
    err = capsys.readouterr().err
    assert "no metadata sidecar" in err and "not a readable ONNX" not in err

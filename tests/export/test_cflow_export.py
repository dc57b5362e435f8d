"""CFLOW-AD end to end: `fftrain --model cflow` on real ELPV cells, `ffexport`, and ffrt's
Detector; the exported graph (no loop, no data-dependent normalization, TensorRT-buildable,
uint8 only into a Cast), its parity with PyTorch, and batch independence through the runtime.
Old FastFlow model files (no model kind in their metadata) keep loading as FastFlow."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from ffexport.cli import main as ffexport_main
from ffexport.parity import check
from ffrt import Detector
from ffrt.meta import META_KEY
from ffrt.metafile import read_onnx_meta
from ffrt.tensorrt import compat
from fftrain import checkpoint
from fftrain.cli import main as fftrain_main
from fftrain.data import to_tensor_batch
from support.uint8_input import assert_uint8_only_into_cast

#: Operators that would make a part's score depend on anything but the part: control flow
#: (the reference's loop over vector batches) and reductions that could span the batch.
DATA_DEPENDENT = {"Loop", "Scan", "If", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin"}


@pytest.fixture(scope="module")
def cflow_run(elpv_split, tmp_path_factory):
    """fftrain --model cflow on a folder of real ELPV cells (MVTec layout), then ffexport."""
    data = tmp_path_factory.mktemp("cflow_data")
    (data / "train" / "good").mkdir(parents=True)
    for s in elpv_split.train[:40]:
        shutil.copy(s.path, data / "train" / "good" / s.path.name)
    out = tmp_path_factory.mktemp("cflow_model")
    assert fftrain_main(["--data", str(data), "--out", str(out / "model.pt"), "--model", "cflow", "--image-size", "64",
                         "--flow-steps", "2", "--condition-channels", "32", "--epochs", "2",
                         "--positions-per-step", "1024", "--augment-views", "1", "--val-every", "5", "--quiet",
                         # CFLOW's graph as such (the bank's per-image reductions: tests/export/test_export.py)
                         "--memory-bank", "off"]) == 0
    assert ffexport_main(["--no-bf16", "--ckpt", str(out / "model.pt"), "--out", str(out), "--batch-max", "16"]) == 0
    return out / "model.pt", out / "model.onnx"


def test_the_checkpoint_and_the_file_say_cflow(cflow_run):
    ckpt, onnx_path = cflow_run
    model, payload = checkpoint.load(ckpt)
    assert model.config.model == "cflow" and payload["config"]["model"] == "cflow"
    settings = payload["train_info"]["settings"]
    # the kind's step defaults where the command named none (the paper's learning rate), its own where it did
    assert (settings["lr"], settings["batch_size"], settings["positions_per_step"]) == (2e-4, 8, 1024)
    meta = read_onnx_meta(onnx_path)
    assert meta.schema_version == 12 and meta.model.kind == "cflow" and meta.model.condition_channels == 32
    assert "log|det J|" in meta.score.map_units and "standardized" in meta.score.map_units
    assert meta.flow.steps == 2 and meta.flow.conv3x3_only is False


def test_the_graph_has_no_loop_no_batch_statistics_and_builds_on_tensorrt(cflow_run):
    _, onnx_path = cflow_run
    graph = onnx.load(str(onnx_path)).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & DATA_DEPENDENT, ops & DATA_DEPENDENT
    assert "Conv" in ops and not ops & {"Gather", "Split", "Resize"}
    # The positional encoding is a constant of the graph (computed nowhere in it): per scale a
    # [1, channels, h, w] initializer, the encoding itself or, where the exporter folded the
    # first layers' products with it, those products.
    assert not ops & {"Sin", "Cos", "Range"}
    per_position = {(t.dims[2], t.dims[3]) for t in graph.initializer if len(t.dims) == 4 and t.dims[0] == 1
                    and t.dims[1] >= 32}
    assert {(16, 16), (8, 8), (4, 4)} <= per_position
    assert_uint8_only_into_cast(onnx_path)
    assert compat.check(onnx_path) == []


def test_parity_with_pytorch_on_real_images(cflow_run, real_images):
    ckpt, onnx_path = cflow_run
    model, _ = checkpoint.load(ckpt)
    report = check(model, onnx_path, real_images)
    assert report.ok, str(report)
    assert report.map_max_rel < 1e-4 and report.score_max_rel < 1e-4, str(report)


def test_a_score_does_not_depend_on_the_other_images_in_the_batch(cflow_run, elpv_split):
    _, onnx_path = cflow_run
    det = Detector(onnx_path, backend="onnxruntime-cpu", resize_outputs=False)
    paths = [str(s.path) for s in elpv_split.val[:9]]
    alone = det.predict_batch(paths[:1], batch_size=1)[0]
    others = [str(s.path) for s in elpv_split.train[40:48]]
    for position in (0, 4, 8):  # first, middle and last of a batch of 9
        batch = others[:position] + paths[:1] + others[position:]
        inside = det.predict_batch(batch, batch_size=9)[position]
        assert abs(inside.score - alone.score) <= 1e-5 * max(1.0, abs(alone.score))
        np.testing.assert_allclose(inside.anomaly_map, alone.anomaly_map, rtol=1e-5, atol=1e-5)
    # and the figure is not trivially constant: other images score differently
    scores = [r.score for r in det.predict_batch(others, batch_size=8)]
    assert max(scores) - min(scores) > 1e-3


def test_the_detector_scores_what_pytorch_scores(cflow_run, elpv_split):
    from fftrain.data import load_batch

    ckpt, onnx_path = cflow_run
    model, payload = checkpoint.load(ckpt)
    det = Detector(onnx_path, backend="onnxruntime-cpu")
    samples = elpv_split.val[:6]
    results = det.predict_batch([str(s.path) for s in samples])
    with torch.no_grad():
        _, scores = model(to_tensor_batch(load_batch(samples, 64)))
    np.testing.assert_allclose([r.score for r in results], scores.numpy(), rtol=1e-4, atol=1e-5)
    assert det.thresholds.image == payload["calibration"]["image_threshold"]


def test_an_old_fastflow_file_without_a_model_kind_loads_as_fastflow(tiny_onnx, tmp_path, real_images):
    """A file exported before schema 6 has no `model` entry: it is FastFlow and scores as before."""
    proto = onnx.load(str(tiny_onnx))
    prop = next(p for p in proto.metadata_props if p.key == META_KEY)
    old = json.loads(prop.value)
    del old["model"]
    old["schema_version"] = 5
    prop.value = json.dumps(old)
    path = tmp_path / "old.onnx"
    onnx.save(proto, str(path))
    assert read_onnx_meta(path).model.kind == "fastflow"
    new, legacy = (Detector(p, backend="onnxruntime-cpu") for p in (tiny_onnx, path))
    assert [r.score for r in legacy.predict_batch(list(real_images))] == \
        [r.score for r in new.predict_batch(list(real_images))]


def test_fp16_works_for_cflow_and_is_gated(cflow_run, tmp_path, capsys):
    ckpt, _ = cflow_run
    assert ffexport_main(["--ckpt", str(ckpt), "--out", str(tmp_path), "--batch-max", "4", "--fp16"]) == 0
    fp16 = tmp_path / "model.fp16.onnx"
    meta = read_onnx_meta(fp16)
    assert (meta.precision, meta.model.kind) == ("fp16", "cflow")
    assert "fp16 vs fp32 on" in capsys.readouterr().out  # the gate ran (and passed: exit 0)
    assert_uint8_only_into_cast(fp16)
    assert compat.check(fp16) == []


def test_bf16_refits_the_cflow_decoders_on_the_bf16_backbone_and_records_the_gate(cflow_run, tmp_path):
    pytest.importorskip("openvino", reason='OpenVINO is not installed: pip install "ffrt[openvino]"')
    from ffrt.backends.openvino import bf16_problem

    if (missing := bf16_problem()) is not None:
        pytest.skip(f"ffexport --bf16: {missing}")
    ckpt, fp32 = cflow_run
    assert ffexport_main(["--ckpt", str(ckpt), "--out", str(tmp_path), "--batch-max", "4", "--bf16",
                          "--refit-epochs", "1", "--force"]) == 0
    meta = read_onnx_meta(tmp_path / "model.bf16.onnx")
    assert meta.model.kind == "cflow" and "BF16" in meta.head_fit
    (gate,) = meta.precision_gates
    assert gate.precision == "bf16" and gate.keep_fp32 == "head" and gate.images > 0
    # the decoders are the re-fit ones, not the FP32 model's
    def decoders(path):
        return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
                if t.name.startswith("flows.")}

    before, after = decoders(fp32), decoders(tmp_path / "model.bf16.onnx")
    assert after.keys() == before.keys() and any(not np.array_equal(after[k], before[k]) for k in after)


def test_int8_refits_the_cflow_decoders_on_each_int8_backbone(cflow_run, tmp_path, real_images):
    from ffcalib.int8 import CPU_NAME, TRT_NAME
    from ffcore.ort import make_session

    ckpt, _ = cflow_run
    assert ffexport_main(["--ckpt", str(ckpt), "--out", str(tmp_path), "--batch-max", "4", "--int8",
                          "--refit-epochs", "1", "--calib-count", "8", "--force"]) == 0
    for name, target in ((TRT_NAME, "tensorrt"), (CPU_NAME, "cpu")):
        meta = read_onnx_meta(tmp_path / name)
        assert (meta.precision, meta.target, meta.model.kind) == ("int8", target, "cflow")
        assert "re-fit" in meta.head_fit
        session = make_session(tmp_path / name)
        amap, score = session.run(None, {"image": real_images[:2]})
        assert np.isfinite(amap).all() and np.isfinite(score).all()
    assert compat.check(tmp_path / TRT_NAME) == []


def test_ffrt_info_names_the_model_kind(cflow_run, tiny_onnx, capsys):
    from ffrt.cli import main as ffrt_main

    _, onnx_path = cflow_run
    assert ffrt_main(["info", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "model kind:   cflow (couplings conditioned on a 32-channel positional encoding)" in out
    assert "flow:         2 steps" in out and ", 1x1, clamp" in out
    assert ffrt_main(["info", str(tiny_onnx)]) == 0
    out = capsys.readouterr().out
    assert "model kind:   fastflow\n" in out and ", 3x3 only, clamp" in out
